package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
)

// exitWait bounds how long a call that failed Unavailable waits to learn
// whether the process died.
const exitWait = 2 * time.Second

// conn routes each call to the instance's current process.
type conn struct{ in *instance }

var _ grpc.ClientConnInterface = (*conn)(nil)

func (c *conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	p, err := c.in.current()
	if err != nil {
		return err
	}
	return c.in.callError(ctx, p, p.Conn().Invoke(ctx, method, args, reply, opts...))
}

func (c *conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p, err := c.in.current()
	if err != nil {
		return nil, err
	}
	s, err := p.Conn().NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, c.in.callError(ctx, p, err)
	}
	return &stream{ClientStream: s, in: c.in, p: p, ctx: ctx}, nil
}

// stream gives a stream's errors the plugin's name.
type stream struct {
	grpc.ClientStream
	in  *instance
	p   *host.Process
	ctx context.Context
}

func (s *stream) SendMsg(m any) error {
	// io.EOF means the stream broke; RecvMsg tells why.
	return s.in.callError(s.ctx, s.p, s.ClientStream.SendMsg(m))
}

func (s *stream) RecvMsg(m any) error {
	return s.in.callError(s.ctx, s.p, s.ClientStream.RecvMsg(m))
}

func (s *stream) CloseSend() error {
	return s.in.callError(s.ctx, s.p, s.ClientStream.CloseSend())
}

// callError prefixes a plugin's error with its name, keeping its class (the
// connection's errdefs interceptor has turned the status into one). A call
// that failed because the process died fails with Unavailable saying so:
// the connection breaks (Unavailable) or, once go-plugin has noticed the
// exit and closed it, the call is cancelled under a caller who did not.
func (in *instance) callError(ctx context.Context, p *host.Process, err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	died := errdefs.IsUnavailable(err) || (errdefs.IsCanceled(err) && ctx.Err() == nil)
	if died && in.exited(p) {
		return unavailable(in.id, "plugin exited during the call")
	}
	return fmt.Errorf("%s: %w", in.id, err)
}

// exited tells whether p is gone. A plugin may itself answer Unavailable (an
// ingest held by another writer), so a plugin that still answers a ping is
// taken at its word; otherwise the exit is awaited for a moment, as the
// broken connection is usually seen before the process is reaped.
func (in *instance) exited(p *host.Process) bool {
	select {
	case <-p.Done():
		return true
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), exitWait)
	defer cancel()
	if p.Ping(ctx) == nil {
		return false
	}
	select {
	case <-p.Done():
		return true
	case <-ctx.Done():
		return false
	}
}

func unavailable(id, msg string) error {
	return fmt.Errorf("%s: %s: %w", id, msg, errdefs.ErrUnavailable)
}
