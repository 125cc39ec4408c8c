package shim

import "time"

// The types below cross the shim's socket and mirror sdk/runtime's of the
// same names, field for field (the plugin converts): the shim does not
// link the sdk, whose packages bring gRPC and protobuf with them.

// Status is a process's state, numbered as sdk/runtime's Status.
type Status int

// The statuses, as sdk/runtime numbers them.
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

// Event topics, as sdk/runtime names them.
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

// IO names the stdio of a process (sdk/runtime's IO): LogPath, when set,
// is a CRI format log the shim writes the output to as well; with
// KeepStdin, the stdin FIFO's writers may come and go (only CloseIO ends
// the process's stdin).
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

// ExitStatus is a process's exit (sdk/runtime's ExitStatus).
type ExitStatus struct {
	Pid      uint32
	Status   uint32
	ExitedAt time.Time
}

// ProcessInfo is one process of a task (sdk/runtime's ProcessInfo).
type ProcessInfo struct {
	Pid    uint32
	ExecID string
}

// TaskState is what the shim knows of a process (sdk/runtime's
// TaskState).
type TaskState struct {
	ID         string
	ExecID     string
	Pid        uint32
	Status     Status
	IO         IO
	ExitStatus uint32
	ExitedAt   time.Time
	Reason     string
}

// Event is a task transition (sdk/runtime's Event).
type Event struct {
	Topic      string
	ID         string
	ExecID     string
	Pid        uint32
	ExitStatus uint32
	ExitedAt   time.Time
	Timestamp  time.Time
}
