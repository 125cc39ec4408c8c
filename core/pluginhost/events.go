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

// WithEvents has fn called as plugins start, exit and are restarted, in
// that order for each plugin. It is called on the host's goroutines,
// sometimes under a plugin's lock: it must not block nor call the Host.
func WithEvents(fn func(Event)) Option {
	return func(o *options) { o.events = fn }
}

// emit tells the hook, if any, of t about in; in.mu is not held.
func (in *instance) emit(t EventType, pid int) {
	in.mu.Lock()
	ev := in.event(t, pid)
	in.mu.Unlock()
	in.send(ev)
}

// event is the Event of t about in; in.mu is held.
func (in *instance) event(t EventType, pid int) Event {
	ev := Event{Type: t, Kind: in.spec.Kind, Name: in.spec.Name, Pid: pid, Restarts: in.restarts}
	if t == EventExited {
		ev.Error = in.lastErr
	}
	return ev
}

func (in *instance) send(ev Event) {
	if fn := in.h.opts.events; fn != nil {
		fn(ev)
	}
}
