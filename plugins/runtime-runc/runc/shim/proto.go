package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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

// ServiceName is the shim's net/rpc service.
const ServiceName = "Shim"

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

// decodeJSON decodes b into v as InvalidArgument when it does not fit.
func decodeJSON(what string, b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
	}
	return nil
}
