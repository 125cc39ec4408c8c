package events

import "time"

// Topics keeld publishes. The names are containerd's where containerd has
// the event; plugins and gc are keel's own.
const (
	TopicNamespaceCreate = "/namespaces/create"
	TopicNamespaceUpdate = "/namespaces/update"
	TopicNamespaceDelete = "/namespaces/delete"

	TopicImageCreate = "/images/create"
	TopicImageUpdate = "/images/update"
	TopicImageDelete = "/images/delete"

	TopicContentDelete = "/content/delete"

	TopicSnapshotPrepare = "/snapshot/prepare"
	TopicSnapshotCommit  = "/snapshot/commit"
	TopicSnapshotRemove  = "/snapshot/remove"

	TopicContainerCreate = "/containers/create"
	TopicContainerUpdate = "/containers/update"
	TopicContainerDelete = "/containers/delete"

	// Task topics are the runtime plugins' (sdk/runtime): /tasks/create,
	// /tasks/start, /tasks/exit, /tasks/oom, /tasks/exec-added,
	// /tasks/exec-started, /tasks/paused, /tasks/resumed, /tasks/delete.
	TopicTaskPrefix = "/tasks/"
	TopicTaskOOM    = "/tasks/oom"

	TopicPluginStarted   = "/plugins/started"
	TopicPluginExited    = "/plugins/exited"
	TopicPluginRestarted = "/plugins/restarted"

	TopicGCRun = "/gc/run"
)

// Namespace is the payload of /namespaces/*.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Image is the payload of /images/*; Target is empty on delete.
type Image struct {
	Name   string
	Target string // the target descriptor's digest
	Labels map[string]string
}

// Content is the payload of /content/delete.
type Content struct {
	Digest string
}

// Snapshot is the payload of /snapshot/*: Key and Parent on prepare, Key
// and Name on commit, Key on remove.
type Snapshot struct {
	Snapshotter string
	Key         string
	Parent      string
	Name        string
}

// Container is the payload of /containers/*; only ID is set on delete.
type Container struct {
	ID          string
	Image       string
	Runtime     string
	Snapshotter string
	SnapshotKey string
	Labels      map[string]string
}

// Task is the payload of /tasks/*, relayed from a runtime plugin.
type Task struct {
	ID         string // the container's
	ExecID     string
	Runtime    string
	Pid        uint32
	ExitStatus uint32
	ExitedAt   time.Time
}

// Plugin is the payload of /plugins/*.
type Plugin struct {
	Kind, Name string
	Pid        int
	// Restarts counts the restarts since keeld started.
	Restarts int
	// Error says why the plugin exited, when known.
	Error string
}

// GCRun is the payload of /gc/run: one collection.
type GCRun struct {
	// Removed counts what was removed, by type ("image", "content",
	// "snapshot", "lease", "ingest"…).
	Removed map[string]int
	// BytesFreed is the content bytes removed, when known.
	BytesFreed int64
	Errors     []string
	Duration   time.Duration
}
