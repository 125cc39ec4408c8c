// Package shimclient is the plugin's end of a shim connection: net/rpc's
// client over the shim's unix socket. It is apart from package shim so
// that the shim executable does not link net/rpc (see shim's rpc.go).
package shimclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"strconv"
	"strings"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Client is the plugin's end of a shim connection.
type Client struct {
	c *rpc.Client
}

// Dial connects to the shim listening on socket, failing fast when nothing
// listens there.
func Dial(ctx context.Context, socket string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("dial shim %s: %v: %w", socket, err, errdefs.ErrUnavailable)
	}
	return &Client{c: rpc.NewClient(conn)}, nil
}

// ErrConnection marks a call that failed because the shim went away.
var ErrConnection = errors.New("shim connection lost")

// Call calls method and waits for its reply or ctx.
func (c *Client) Call(ctx context.Context, method string, req, reply any) error {
	call := c.c.Go(shim.ServiceName+"."+method, req, reply, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		if call.Error == nil {
			return nil
		}
		if errors.Is(call.Error, rpc.ErrShutdown) || isConnError(call.Error) {
			return fmt.Errorf("%s: %w: %w", strings.ToLower(method), ErrConnection, errdefs.ErrUnavailable)
		}
		return fromWire(call.Error)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isConnError(err error) bool {
	var se rpc.ServerError
	return !errors.As(err, &se)
}

// noMethod starts the error of a shim that lacks the method called (one
// an older plugin started), as net/rpc's server and the shim's word it.
const noMethod = "rpc: can't find method "

// fromWire restores the class of an error a shim returned.
func fromWire(err error) error {
	var se rpc.ServerError
	if !errors.As(err, &se) {
		return err
	}
	if m, ok := strings.CutPrefix(string(se), noMethod); ok {
		return fmt.Errorf("the task's shim has no %s call (an older plugin started it; a new task gets a shim that has): %w", m, errdefs.ErrNotImplemented)
	}
	code, msg, ok := strings.Cut(string(se), ":")
	n, cerr := strconv.Atoi(code)
	if !ok || cerr != nil {
		return errors.New(string(se))
	}
	return shim.ErrorFromCode(n, msg)
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }
