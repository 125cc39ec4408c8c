// Package runtime is the runtime plugin contract: it runs tasks, a
// container's init process, and the processes exec'd beside it.
//
// # Terms
//
// A task is named by id, the container's id. Its init process has the empty
// exec id; Exec adds a process under a new exec id. A process is created
// (Create, Exec), started (Start), may be paused and resumed (the whole task
// only), exits, and is deleted (Delete), which returns its exit status and
// frees what the runtime holds for it. Stdio is given as paths (FIFOs or a
// console socket) the runtime opens; the runtime never holds the caller's
// file descriptors.
//
//	pid, _ := rt.Create(ctx, runtime.CreateOpts{ID: "web", Spec: spec, Rootfs: mounts})
//	rt.Start(ctx, "web", "")
//	st, _ := rt.Wait(ctx, "web", "")  // blocks until the init process exits
//	rt.Delete(ctx, "web", "")
//
// Events report every transition, in order, on the Topic* topics; keeld
// subscribes once per plugin process.
//
// # Errors
//
// An unknown task or exec id is NotFound; an id in use AlreadyExists; a call
// the process's status does not allow (Start twice, Delete of a running
// task, Pause of a stopped one) FailedPrecondition; a malformed spec or
// option InvalidArgument; a feature the runtime lacks (say Checkpoint)
// NotImplemented; a task the runtime cannot reach now, though it may still
// run (its shim does not answer), Unavailable naming why.
//
// # Unknown tasks
//
// A runtime reports a task StatusUnknown, with a Reason, when it cannot tell
// its state: it must not take a task that does not answer for an ended one,
// nor kill it for being slow. It reports the task again as it is once it can.
package runtime

import (
	"context"
	"encoding/json"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/mount"
)

// Status is the state of a process.
type Status int

const (
	StatusUnknown Status = iota
	StatusCreated
	StatusRunning
	StatusStopped
	StatusPaused
	StatusPausing
)

func (s Status) String() string {
	switch s {
	case StatusCreated:
		return "created"
	case StatusRunning:
		return "running"
	case StatusStopped:
		return "stopped"
	case StatusPaused:
		return "paused"
	case StatusPausing:
		return "pausing"
	}
	return "unknown"
}

// Event topics, as keeld publishes them.
const (
	TopicCreate      = "/tasks/create"
	TopicStart       = "/tasks/start"
	TopicExit        = "/tasks/exit"
	TopicOOM         = "/tasks/oom"
	TopicExecAdded   = "/tasks/exec-added"
	TopicExecStarted = "/tasks/exec-started"
	TopicPaused      = "/tasks/paused"
	TopicResumed     = "/tasks/resumed"
	TopicDelete      = "/tasks/delete"
)

// CapabilityCheckpoint is announced by runtimes that can checkpoint a task
// and restore one (CreateOpts.Checkpoint).
const CapabilityCheckpoint = "checkpoint"

// CapabilityRecursiveReadOnly is announced by runtimes that honour the
// OCI mount option "rro": a bind mount read-only with every mount below
// it (runc 1.1+ on a kernel with mount_setattr, Linux 5.12+). The CRI's
// recursive read-only mounts need it; a runtime without it would leave
// the submounts writable.
const CapabilityRecursiveReadOnly = "rro-mounts"

// CapabilityCRILog is announced by runtimes that write a process's output
// to IO.LogPath in the CRI log format. keeld refuses a log for a runtime
// without it (an older runtime would ignore the field and lose the
// output).
const CapabilityCRILog = "cri-log"

// IO names the stdio of a process: paths the runtime opens (FIFOs, files),
// empty for none. With Terminal, Stdout is the console and Stderr unused.
//
// LogPath, when set, is a file the runtime writes the process's output to
// as well, in the CRI log format (sdk/crilog: the terminal's output as
// stdout), rotating it once it would pass LogMaxSize bytes (0: never) and
// keeping LogMaxFiles files, the current one included. The runtime writes
// it for as long as the process runs, whoever else holds its stdio, and
// reports the exit once the output is in it.
//
// KeepStdin keeps the process's stdin open while the writers of the Stdin
// FIFO come and go (attach after attach): only CloseIO ends it.
type IO struct {
	Stdin       string
	Stdout      string
	Stderr      string
	Terminal    bool
	LogPath     string
	LogMaxSize  int64
	LogMaxFiles int
	KeepStdin   bool
}

func logToProto(io IO) *pluginv1.LogFile {
	if io.LogPath == "" {
		return nil
	}
	return &pluginv1.LogFile{Path: io.LogPath, MaxSize: io.LogMaxSize, MaxFiles: int32(io.LogMaxFiles)}
}

// ioFromProto gathers the stdio fields of a request or state.
func ioFromProto(stdin, stdout, stderr string, terminal, keepStdin bool, log *pluginv1.LogFile) IO {
	io := IO{Stdin: stdin, Stdout: stdout, Stderr: stderr, Terminal: terminal, KeepStdin: keepStdin}
	if log != nil {
		io.LogPath, io.LogMaxSize, io.LogMaxFiles = log.Path, log.MaxSize, int(log.MaxFiles)
	}
	return io
}

// CreateOpts describe a task to create.
type CreateOpts struct {
	ID string
	// Spec is the OCI runtime spec; its Root.Path is ignored in favour of
	// Rootfs, which the runtime mounts.
	Spec   *specs.Spec
	Rootfs []mount.Mount
	IO     IO
	// Checkpoint, when set, restores the task from this image directory.
	Checkpoint string
	// Options are runtime specific, as JSON.
	Options json.RawMessage
}

// ExecOpts describe a process to add to a task.
type ExecOpts struct {
	ID     string
	ExecID string
	Spec   *specs.Process
	IO     IO
}

// CheckpointOpts describe a checkpoint of a task.
type CheckpointOpts struct {
	// Path is the directory the checkpoint image is written to.
	Path string
	// Exit stops the task once checkpointed.
	Exit bool
	// Options are runtime specific, as JSON.
	Options json.RawMessage
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Pid      uint32
	Status   uint32
	ExitedAt time.Time
}

// ProcessInfo is one process of a task.
type ProcessInfo struct {
	Pid    uint32
	ExecID string // empty for the init process or a process the runtime did not start
}

// TaskState is what the runtime knows of a process.
type TaskState struct {
	ID         string
	ExecID     string
	Pid        uint32
	Status     Status
	IO         IO
	ExitStatus uint32
	ExitedAt   time.Time
	// Reason explains StatusUnknown (e.g. a shim that does not answer) or
	// an exit the runtime did not see (e.g. a shim that died).
	Reason string
}

// Stats are a task's metrics: Data is the message TypeURL names, e.g. the
// cgroups v1 or v2 metrics.
type Stats struct {
	TypeURL string
	Data    []byte
}

// Event is a task transition.
type Event struct {
	Topic      string
	ID         string
	ExecID     string
	Pid        uint32
	ExitStatus uint32
	ExitedAt   time.Time
	Timestamp  time.Time
}

// Runtime is the runtime plugin kind. execID is empty for a task's init
// process.
type Runtime interface {
	// Create makes a task, not yet started, and returns its init pid.
	// AlreadyExists for an id in use; InvalidArgument for a bad spec.
	Create(ctx context.Context, opts CreateOpts) (pid uint32, err error)
	// Start starts a created process. FailedPrecondition unless created.
	Start(ctx context.Context, id, execID string) (pid uint32, err error)
	// Delete removes a stopped (or created) process and returns its exit.
	// FailedPrecondition while it runs.
	Delete(ctx context.Context, id, execID string) (ExitStatus, error)
	// Kill signals a process; all signals every process of the task.
	Kill(ctx context.Context, id, execID string, sig syscall.Signal, all bool) error
	// Exec adds a process to a running task. AlreadyExists for an exec id
	// in use.
	Exec(ctx context.Context, opts ExecOpts) error
	// ResizePty resizes a process's console. FailedPrecondition without one.
	ResizePty(ctx context.Context, id, execID string, width, height uint32) error
	// CloseIO closes a process's stdin, so it reads EOF.
	CloseIO(ctx context.Context, id, execID string) error
	// Pause freezes every process of the task; Resume thaws them.
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// Pids lists the task's processes.
	Pids(ctx context.Context, id string) ([]ProcessInfo, error)
	// Checkpoint writes the task's checkpoint image.
	Checkpoint(ctx context.Context, id string, opts CheckpointOpts) error
	// Update changes the task's resources (nil keeps them) and annotations.
	Update(ctx context.Context, id string, resources *specs.LinuxResources, annotations map[string]string) error
	// Stats returns the task's metrics.
	Stats(ctx context.Context, id string) (Stats, error)
	// Wait blocks until the process exits, or ctx ends.
	Wait(ctx context.Context, id, execID string) (ExitStatus, error)
	// State reports a process.
	State(ctx context.Context, id, execID string) (TaskState, error)
	// List reports every task the runtime knows (init processes), so a
	// restarted keeld finds them again.
	List(ctx context.Context) ([]TaskState, error)
	// Events streams task events in order until ctx ends. When the stream
	// ends, errs carries why (nothing when ctx ended; Unavailable when the
	// runtime ended it) and is closed, then events is closed:
	//
	//	events, errs := rt.Events(ctx)
	//	for ev := range events { … }
	//	if err := <-errs; err != nil { … }
	//
	// An implementation stops sending and closes both once ctx ends.
	Events(ctx context.Context) (events <-chan Event, errs <-chan error)
	// Close releases the runtime. Tasks keep running.
	Close() error
}
