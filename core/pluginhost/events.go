package pluginhost

// EventType is what happened to a plugin.
type EventType string

// What a Host tells its WithEvents hook.
const (
	EventStarted   EventType = "started"   // first start, or a start after an idle stop
	EventExited    EventType = "exited"    // the process went down (a restart follows)
	EventRestarted EventType = "restarted" // a new process runs after an exit
)

// Event is one plugin lifecycle event.
type Event struct {
	Type       EventType
	Kind, Name string
	Pid        int
	// Restarts counts the restart attempts since Start.
	Restarts int
	// Error is why the plugin went down, when known.
	Error string
}

// WithEvents has fn called, on the host's goroutines, as plugins start,
// exit and are restarted; it must not block.
func WithEvents(fn func(Event)) Option {
	return func(o *options) { o.events = fn }
}

// emit tells the hook, if any, of ev about in; in.mu is not held.
func (in *instance) emit(t EventType, pid int) {
	fn := in.h.opts.events
	if fn == nil {
		return
	}
	in.mu.Lock()
	ev := Event{Type: t, Kind: in.spec.Kind, Name: in.spec.Name, Pid: pid, Restarts: in.restarts}
	if t == EventExited {
		ev.Error = in.lastErr
	}
	in.mu.Unlock()
	fn(ev)
}
