package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"strconv"
	"strings"
	"time"

	errdefs "github.com/containerd/errdefs"
)

// The plugin talks to a shim with net/rpc (gob) over the shim's unix
// socket: one connection, calls multiplexed, no generated code, and a
// small footprint in the shim. Error classes cross as the gRPC code in
// front of the message (see codes.go).
//
// The shim is an executable of its own that links neither gRPC nor
// protobuf nor keel's sdk: its wire types below mirror sdk/runtime's
// field for field (gob matches fields by name, so shims of older plugins,
// which sent sdk/runtime's types, still answer), and TestWireTypesMirrorSDK
// keeps them so.

// serviceName is the shim's net/rpc service.
const serviceName = "Shim"

// Config is what the plugin hands a new shim, written to task.json in
// the task's directory before the shim starts.
type Config struct {
	ID     string
	Bundle string
	Socket string
	// Runtime is the OCI runtime binary (runc, crun); RuntimeRoot its
	// --root.
	Runtime     string
	RuntimeRoot string
	// The rootfs is mounted on Bundle/rootfs by the plugin before the shim
	// starts (task.json of older plugins listed the mounts, for their shim
	// to make); the shim unmounts it at Delete.
	IO IO
	// Checkpoint, when set, restores from this image directory.
	Checkpoint string
	// CgroupPath is the container's cgroup (spec's cgroupsPath).
	CgroupPath string
}

// Empty is a request or reply without fields.
type Empty struct{}

// ProcessRequest names a process: the init process for an empty ExecID.
type ProcessRequest struct{ ExecID string }

// PidReply carries a pid.
type PidReply struct{ Pid uint32 }

// ExitReply is a process's exit.
type ExitReply struct{ Exit ExitStatus }

// KillRequest signals a process.
type KillRequest struct {
	ExecID string
	Signal int
	All    bool
}

// ExecRequest adds a process; Spec is the OCI process as JSON.
type ExecRequest struct {
	ExecID string
	Spec   []byte
	IO     IO
}

// ResizeRequest resizes a process's console.
type ResizeRequest struct {
	ExecID        string
	Width, Height uint32
}

// PidsReply lists the task's processes.
type PidsReply struct{ Processes []ProcessInfo }

// CheckpointRequest checkpoints the task.
type CheckpointRequest struct {
	Path string
	Exit bool
	// WorkPath holds CRIU's logs.
	WorkPath string
}

// UpdateRequest changes resources (OCI LinuxResources as JSON).
type UpdateRequest struct{ Resources []byte }

// StateReply is a process's state.
type StateReply struct{ State TaskState }

// EventsRequest asks for the events after sequence After, blocking until
// there is one (or Timeout). After 0 means after the last acknowledged
// one: a restarted plugin does not know it.
type EventsRequest struct {
	After   uint64
	Timeout time.Duration
}

// SeqEvent is an event and its place in the shim's order.
type SeqEvent struct {
	Seq   uint64
	Event Event
}

// EventsReply carries events in order.
type EventsReply struct{ Events []SeqEvent }

// wireError encodes err's class in front of its message.
func wireError(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(strconv.Itoa(errCode(err)) + ":" + err.Error())
}

// fromWire restores the class of an error a shim returned.
func fromWire(err error) error {
	var se rpc.ServerError
	if !errors.As(err, &se) {
		return err
	}
	code, msg, ok := strings.Cut(string(se), ":")
	n, cerr := strconv.Atoi(code)
	if !ok || cerr != nil {
		return errors.New(string(se))
	}
	return ErrorFromCode(n, msg)
}

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
	call := c.c.Go(serviceName+"."+method, req, reply, make(chan *rpc.Call, 1))
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

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// decodeJSON decodes b into v as InvalidArgument when it does not fit.
func decodeJSON(what string, b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
	}
	return nil
}
