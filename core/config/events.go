package config

import (
	"github.com/hashicorp/hcl/v2"

	"github.com/keel-runtime/keel/core/events"
)

// Bounds of the events window: a few events are no window at all, and a
// million envelopes already cost hundreds of MiB.
const (
	MinEventsWindow = 16
	MaxEventsWindow = 1 << 20
)

// Events tunes keeld's event exchange.
type Events struct {
	// Window is how many recent events keeld keeps for subscribers to
	// replay (keel events --since).
	Window int `json:"window"`
}

// EventsWindow is the events window: the file's, else
// events.DefaultWindow.
func (c *Config) EventsWindow() int {
	if c.Events == nil {
		return events.DefaultWindow
	}
	return c.Events.Window
}

type eventsSchema struct {
	Window      *int      `hcl:"window,optional"`
	WindowRange hcl.Range `hcl:"window,attr_value_range"`
}

func decodeEvents(e *eventsSchema, fail failFunc) *Events {
	out := &Events{Window: events.DefaultWindow}
	if e.Window != nil {
		if *e.Window < MinEventsWindow || *e.Window > MaxEventsWindow {
			fail(e.WindowRange, "Invalid events window", "window must be %d to %d, not %d.", MinEventsWindow, MaxEventsWindow, *e.Window)
		} else {
			out.Window = *e.Window
		}
	}
	return out
}
