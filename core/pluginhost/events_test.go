package pluginhost_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/core/pluginhost"
)

// WithEvents hears a plugin's start, exit and restart, in that order, with
// the pids of the processes they are about.
func TestEventsHook(t *testing.T) {
	evs := make(chan pluginhost.Event, 16)
	h := startHost(t, []pluginhost.Spec{spec(t, "native", filepath.Join(bin, "snapshotter-native"))},
		pluginhost.WithBackoff(10*time.Millisecond, time.Second), pluginhost.WithEvents(func(ev pluginhost.Event) { evs <- ev }))
	old := onlyStatus(t, h)
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, want := range []pluginhost.EventType{pluginhost.EventStarted, pluginhost.EventExited, pluginhost.EventRestarted} {
		var ev pluginhost.Event
		select {
		case ev = <-evs:
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", want)
		}
		if ev.Type != want || ev.Kind != "snapshotter" || ev.Name != "native" {
			t.Fatalf("event %+v, want %s", ev, want)
		}
		switch want {
		case pluginhost.EventStarted, pluginhost.EventExited:
			if ev.Pid != old.Pid {
				t.Errorf("%s: pid %d, want %d", want, ev.Pid, old.Pid)
			}
		case pluginhost.EventRestarted:
			if ev.Pid == old.Pid || ev.Restarts != 1 {
				t.Errorf("restarted: %+v, want a new pid and 1 restart", ev)
			}
		}
	}
}
