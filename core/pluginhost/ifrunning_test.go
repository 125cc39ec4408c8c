package pluginhost_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestIfRunningCalls: a call marked IfRunning never starts a plugin that
// does not run (it fails at once, Unavailable), reaches one that runs, and
// is no use: however often such calls come, the plugin stops for idleness
// in its time. While one is in flight it holds the plugin running.
func TestIfRunningCalls(t *testing.T) {
	const idle = time.Second
	s := spec(t, "mem", filepath.Join(bin, "memsnap"))
	s.Lazy, s.IdleStop = true, idle
	h, tap := idleHost(t, s)
	sn := snapshotter(t, h, "mem")
	quiet := pluginhost.IfRunning(context.Background())

	notRunning := func(what string) {
		t.Helper()
		_, err := sn.Stat(quiet, "a")
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "snapshotter.mem: plugin is not running") {
			t.Fatalf("%s: an IfRunning call: %v, want unavailable, not running", what, err)
		}
		wantState(t, h, pluginhost.StateIdle)
	}
	notRunning("lazy, never started")

	if _, err := sn.Prepare(context.Background(), "a", ""); err != nil {
		t.Fatal(err)
	}
	// Calls every tenth of the idle period: they reach the plugin while
	// it runs, and it stops all the same.
	reached := 0
	deadline := time.Now().Add(20 * idle)
	for onlyStatus(t, h).State == pluginhost.StateRunning {
		if time.Now().After(deadline) {
			t.Fatalf("IfRunning calls kept the plugin running for %s (idle stop %s)", 20*idle, idle)
		}
		switch _, err := sn.Stat(quiet, "a"); {
		case err == nil:
			reached++
		case !errdefs.IsUnavailable(err):
			t.Fatalf("an IfRunning call to a running plugin: %v", err)
		}
		time.Sleep(idle / 10)
	}
	waitState(t, h, pluginhost.StateIdle, 10*time.Second)
	if reached == 0 {
		t.Error("no IfRunning call reached the running plugin")
	}
	notRunning("stopped for idleness")
	if n := tap.count("plugin started on demand"); n != 1 {
		t.Errorf("%d starts logged, want 1 (the ordinary call's)", n)
	}

	// A stream in flight holds it.
	if _, err := sn.Prepare(context.Background(), "b", ""); err != nil {
		t.Fatal(err)
	}
	streamHolds(t, quiet, h, sn, s)
}
