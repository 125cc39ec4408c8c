package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestIdleStop: with idle_stop set, every plugin of keeld stops once
// unused and starts again on its next call, which succeeds; the runtime
// is not stopped while it has a task, and its events still reach keeld's
// subscribers after it was stopped and started again. plugins ls shows
// each state, a pid only while a process runs, and no restart.
func TestIdleStop(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	k := newRunKeeldEdit(t, "", "", func(cfg string) string {
		return strings.ReplaceAll(cfg, "\n  path = \"keel-", "\n  idle_stop = \"1s\"\n  path = \"keel-")
	})
	allIdle := func() bool {
		for _, p := range k.plugins() {
			if p.State != "idle" || p.Pid != 0 {
				return false
			}
		}
		return true
	}
	waitFor(t, allIdle)
	// The table shows no pid for a plugin with no process.
	for _, line := range strings.Split(strings.TrimSpace(k.ok("plugins", "ls")), "\n")[1:] {
		if f := strings.Fields(line); len(f) < 6 || f[3] != "-" || f[4] != "idle" || f[5] != "0" {
			t.Errorf("plugins ls row of an idle plugin: %q, want pid -, idle, 0 restarts", line)
		}
	}

	// A pull starts the resolver, the content store and the snapshotter.
	k.ok("image", "pull", "-q", k.ref)
	waitFor(t, allIdle)

	c := k.client(t, "default")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, _, err := c.TaskEvents(ctx, false)
	if err != nil {
		t.Fatal(err)
	}

	k.ok("run", "-d", k.ref, "sleeper", "/bin/busybox", "sleep", "1000")
	rt := k.plugins()["runtime.runc"]
	if rt.State != "running" || rt.Pid == 0 {
		t.Fatalf("runtime after run -d: %+v", rt)
	}
	time.Sleep(4 * idle) // several idle periods with a task and no call
	if now := k.plugins()["runtime.runc"]; now.State != "running" || now.Pid != rt.Pid {
		t.Fatalf("the runtime changed while it had a task: %+v, was pid %d", now, rt.Pid)
	}
	k.ok("container", "rm", "--force", "sleeper")
	waitFor(t, func() bool { return k.plugins()["runtime.runc"].State == "idle" })

	// The runtime starts again for the next task; its events reach the
	// subscriber that subscribed before.
	if r := k.keel("run", "--rm", k.ref, "again", "/bin/busybox", "true"); r.code != 0 {
		t.Fatalf("run --rm after the runtime's idle stop: %v", r)
	}
	deadline := time.After(settle)
	for seen := false; !seen; {
		select {
		case ev := <-evs:
			seen = ev.ID == "again" && ev.Topic == "/tasks/exit"
		case <-deadline:
			t.Fatal("no /tasks/exit event of the task run after the runtime's idle stop")
		}
	}
	for id, p := range k.plugins() {
		if p.Restarts != 0 || p.LastError != "" {
			t.Errorf("%s: %+v: an idle stop is no restart, no error", id, p)
		}
	}
}

// TestLazyStartFailure: a lazy_start plugin whose executable does not
// match its sha256 lets keeld start; the first call that needs it fails
// with one line naming the plugin and why, and plugins ls shows it failed
// with that reason.
func TestLazyStartFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bad := strings.Repeat("ab", 32)
	k := e.startWith(t, e.config(t, pullPlugins+`
plugin "resolver" "docker" {
  path       = "keel-resolver-docker"
  sha256     = "`+bad+`"
  lazy_start = true
}
`))
	if p := k.plugins()["resolver.docker"]; p.State != "idle" || p.Pid != 0 {
		t.Fatalf("a lazy plugin before its first call: %+v", p)
	}
	msg := oneLineError(t, k.keel("image", "pull", "127.0.0.1:1/x/y:z"))
	for _, want := range []string{"resolver.docker: plugin failed to start", "sha256 mismatch", bad} {
		if !strings.Contains(msg, want) {
			t.Errorf("pull through a plugin that cannot start: %q lacks %q", msg, want)
		}
	}
	p := k.plugins()["resolver.docker"]
	if p.State != "failed" || p.Pid != 0 || !strings.Contains(p.LastError, "sha256 mismatch") {
		t.Errorf("plugins ls after the failed start: %+v", p)
	}
}
