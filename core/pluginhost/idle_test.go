package pluginhost_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// logTap keeps the host's log lines, besides writing them to the test log,
// so a test can count what the host said.
type logTap struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *logTap) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// count is how many lines hold s.
func (l *logTap) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// idleHost starts s on a host that logs into a tap; the test stops it.
func idleHost(t *testing.T, s pluginhost.Spec) (*pluginhost.Host, *logTap) {
	t.Helper()
	tap := &logTap{t: t}
	h := pluginhost.New(hclog.New(&hclog.LoggerOptions{Name: "keeld", Level: hclog.Debug, Output: tap}),
		pluginhost.WithHealthCheck(100*time.Millisecond, 5*time.Second))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := h.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(ctx, []pluginhost.Spec{s}); err != nil {
		t.Fatalf("start: %v", err)
	}
	return h, tap
}

// wantState checks the one plugin's state, and that it shows a pid exactly
// when it runs; it returns the status.
func wantState(t *testing.T, h *pluginhost.Host, state string) pluginhost.Status {
	t.Helper()
	st := onlyStatus(t, h)
	if st.State != state {
		t.Fatalf("state = %q, want %q (%+v)", st.State, state, st)
	}
	if running := st.State == pluginhost.StateRunning || st.State == pluginhost.StateUnresponsive; running != (st.Pid > 0) {
		t.Fatalf("state %q with pid %d: a pid is shown exactly while a process runs", st.State, st.Pid)
	}
	return st
}

// waitState waits for the one plugin to reach state.
func waitState(t *testing.T, h *pluginhost.Host, state string, timeout time.Duration) pluginhost.Status {
	t.Helper()
	waitFor(t, "state "+state, timeout, func() bool { return onlyStatus(t, h).State == state })
	return wantState(t, h, state)
}

// slowPlugin is a wrapper script that starts memsnap after a delay, so a
// start can be watched while it runs.
func slowPlugin(t *testing.T, delay time.Duration) string {
	path := filepath.Join(t.TempDir(), "slowsnap")
	script := fmt.Sprintf("#!/bin/sh\nsleep %.2f\nexec %s \"$@\"\n", delay.Seconds(), filepath.Join(bin, "memsnap"))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// streamHolds opens a Walk the plugin blocks, with ctx's marks, checks
// that the same process keeps running for several idle periods while it is
// open, then ends it and waits for the idle stop.
func streamHolds(t *testing.T, ctx context.Context, h *pluginhost.Host, sn snapshot.Snapshotter, s pluginhost.Spec) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	walk := make(chan error, 1)
	go func() {
		walk <- sn.Walk(ctx, func(context.Context, snapshot.Info) error { return nil }, "block")
	}()
	blocked := filepath.Join(s.Root, "walk-blocked")
	waitFor(t, "the walk to reach the plugin", 10*time.Second, func() bool {
		_, err := os.Stat(blocked)
		return err == nil
	})
	st := wantState(t, h, pluginhost.StateRunning)
	time.Sleep(4 * s.IdleStop) // several idle periods, the stream open
	if now := wantState(t, h, pluginhost.StateRunning); now.Pid != st.Pid {
		t.Fatalf("the plugin changed under a stream in flight: %+v", now)
	}
	cancel()
	if err := <-walk; !errdefs.IsCanceled(err) {
		t.Errorf("walk: %v, want canceled", err)
	}
	waitState(t, h, pluginhost.StateIdle, 10*time.Second)
}

// TestStartOnDemandAndIdleStop: the life of a plugin that starts on its
// first call and stops when idle, as `keel plugins ls` shows it.
func TestStartOnDemandAndIdleStop(t *testing.T) {
	const idle = 400 * time.Millisecond
	for _, tc := range []struct {
		name string
		// lazy: Start does not launch it.
		lazy bool
		// body calls the plugin and checks what the host shows.
		body func(t *testing.T, h *pluginhost.Host, tap *logTap, sn snapshot.Snapshotter, s pluginhost.Spec)
		// slow: the plugin takes a second to start.
		slow bool
	}{
		{"LazyStartsOnFirstCall", true, func(t *testing.T, h *pluginhost.Host, tap *logTap, sn snapshot.Snapshotter, s pluginhost.Spec) {
			st := wantState(t, h, pluginhost.StateIdle)
			if st.Version != "" || st.Restarts != 0 {
				t.Errorf("a lazy plugin before its first call: %+v", st)
			}
			if _, err := sn.Prepare(context.Background(), "a", ""); err != nil {
				t.Fatal(err)
			}
			st = wantState(t, h, pluginhost.StateRunning)
			if !alive(st.Pid) || st.Version != "0.1.0" || st.Restarts != 0 {
				t.Errorf("after the first call: %+v", st)
			}
			if _, err := sn.Stat(context.Background(), "a"); err != nil {
				t.Errorf("second call: %v", err)
			}
			if n := tap.count("plugin started on demand"); n != 1 {
				t.Errorf("%d starts logged, want 1", n)
			}
		}, false},
		{"ConcurrentFirstCallsStartOnce", true, func(t *testing.T, h *pluginhost.Host, tap *logTap, sn snapshot.Snapshotter, s pluginhost.Spec) {
			const n = 16
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					_, err := sn.Prepare(context.Background(), fmt.Sprintf("k%d", i), "")
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("concurrent first call: %v", err)
				}
			}
			if n := tap.count("plugin started on demand"); n != 1 {
				t.Errorf("%d starts logged, want 1", n)
			}
			// One process holds every key: memsnap keeps them in memory.
			keys := 0
			if err := sn.Walk(context.Background(), func(context.Context, snapshot.Info) error { keys++; return nil }); err != nil {
				t.Fatal(err)
			}
			if keys != n {
				t.Errorf("the plugin holds %d keys, want %d: the calls went to different processes", keys, n)
			}
		}, false},
		{"IdleStopsAfterTimeoutAndStartsAgain", false, func(t *testing.T, h *pluginhost.Host, tap *logTap, sn snapshot.Snapshotter, s pluginhost.Spec) {
			began := time.Now()
			if _, err := sn.Prepare(context.Background(), "a", ""); err != nil {
				t.Fatal(err)
			}
			// (A loaded machine may have stopped it once already.)
			first := onlyStatus(t, h)
			st := waitState(t, h, pluginhost.StateIdle, 10*time.Second)
			if took := time.Since(began); took < idle {
				t.Errorf("stopped %s after its last call, before its idle stop %s", took, idle)
			}
			if st.Restarts != 0 || st.LastError != "" {
				t.Errorf("an idle stop is no failure: %+v", st)
			}
			waitFor(t, "the idle plugin's process to exit", 5*time.Second, func() bool { return !alive(first.Pid) })
			waitFor(t, "the idle stop's log line", 5*time.Second, func() bool { return tap.count("pid="+fmt.Sprint(first.Pid)+" idle_stop") == 1 })
			// It exited on its own (go-plugin logs an exit status or signal
			// as an error): no kill, no restart.
			if n := tap.count("error=") + tap.count("pluginhost: plugin restarted") + tap.count("pluginhost: plugin exited"); n != 0 {
				t.Errorf("the idle stop was not graceful: %d lines of a kill, exit or restart", n)
			}
			if _, err := sn.Prepare(context.Background(), "b", ""); err != nil {
				t.Fatalf("call after the idle stop: %v", err)
			}
			st = wantState(t, h, pluginhost.StateRunning)
			if st.Pid == first.Pid || st.Restarts != 0 {
				t.Errorf("after the next call: %+v (first pid %d)", st, first.Pid)
			}
		}, false},
		{"StreamInFlightHoldsIt", false, func(t *testing.T, h *pluginhost.Host, tap *logTap, sn snapshot.Snapshotter, s pluginhost.Spec) {
			streamHolds(t, context.Background(), h, sn, s)
		}, false},
		{"StartingWhileItStarts", true, func(t *testing.T, h *pluginhost.Host, tap *logTap, sn snapshot.Snapshotter, s pluginhost.Spec) {
			done := make(chan error, 1)
			go func() { _, err := sn.Prepare(context.Background(), "a", ""); done <- err }()
			waitState(t, h, pluginhost.StateStarting, 5*time.Second)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			wantState(t, h, pluginhost.StateRunning)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, "mem", filepath.Join(bin, "memsnap"))
			s.Lazy, s.IdleStop = tc.lazy, idle
			if tc.slow {
				s.Path = slowPlugin(t, time.Second)
			}
			h, tap := idleHost(t, s)
			tc.body(t, h, tap, snapshotter(t, h, "mem"), s)
		})
	}
}

// A plugin with work though no call is in flight — a runtime with tasks,
// here a snapshotter holding snapshots, as its Busy hook says through
// passive calls — is not stopped; without it, it is. The hook's own calls
// neither hold it running nor start it.
func TestBusyPluginIsNotStopped(t *testing.T) {
	const idle = 300 * time.Millisecond
	s := spec(t, "mem", filepath.Join(bin, "memsnap"))
	s.IdleStop = idle
	var asked sync.Mutex
	asks := 0
	s.Busy = func(ctx context.Context, conn grpc.ClientConnInterface) (bool, error) {
		asked.Lock()
		asks++
		asked.Unlock()
		n := 0
		err := snapshot.NewClient(conn).Walk(ctx, func(context.Context, snapshot.Info) error { n++; return nil })
		return n > 0, err
	}
	h, _ := idleHost(t, s)
	sn := snapshotter(t, h, "mem")
	if _, err := sn.Prepare(context.Background(), "task", ""); err != nil {
		t.Fatal(err)
	}
	st := wantState(t, h, pluginhost.StateRunning)
	waitFor(t, "the host to ask the plugin whether it is busy, thrice", 10*time.Second, func() bool {
		asked.Lock()
		defer asked.Unlock()
		return asks >= 3
	})
	if now := wantState(t, h, pluginhost.StateRunning); now.Pid != st.Pid {
		t.Fatalf("a busy plugin changed: %+v", now)
	}
	if err := sn.Remove(context.Background(), "task"); err != nil {
		t.Fatal(err)
	}
	waitState(t, h, pluginhost.StateIdle, 10*time.Second)
	asked.Lock()
	before := asks
	asked.Unlock()
	time.Sleep(3 * idle)
	asked.Lock()
	defer asked.Unlock()
	if asks != before {
		t.Errorf("the busy hook was asked %d times while the plugin was stopped", asks-before)
	}
	wantState(t, h, pluginhost.StateIdle)
}

// A plugin that fails to start on its first call fails that call, and the
// ones waiting with it, with Unavailable naming it and why; the host shows
// it failed with the reason; the next call tries again.
func TestStartOnDemandFailure(t *testing.T) {
	memsnap := filepath.Join(bin, "memsnap")
	for _, tc := range []struct {
		name   string
		sha256 string
		// path is made from the test's temp dir; fix makes it start.
		path   func(dir string) string
		fix    func(t *testing.T, path string)
		expect []string
	}{
		{"BadChecksum", strings.Repeat("ab", 32),
			func(dir string) string { return memsnap }, nil,
			[]string{"sha256 mismatch", memsnap}},
		{"NotAPlugin", "",
			func(dir string) string {
				p := filepath.Join(dir, "junk.sh")
				if err := os.WriteFile(p, []byte("#!/bin/sh\necho hello there\n"), 0o755); err != nil {
					panic(err)
				}
				return p
			}, nil,
			[]string{"is not a keel plugin", "hello there"}},
		{"ExitsAtOnce", "",
			func(dir string) string {
				p := filepath.Join(dir, "exits.sh")
				if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
					panic(err)
				}
				return p
			}, nil,
			[]string{"is not a keel plugin", "exited without a handshake"}},
		{"MissingThenInstalled", "",
			func(dir string) string { return filepath.Join(dir, "later") },
			func(t *testing.T, path string) { copyFile(t, memsnap, path) },
			[]string{"plugin executable", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, "x", tc.path(t.TempDir()))
			s.SHA256, s.Lazy, s.IdleStop = tc.sha256, true, time.Minute
			h, _ := idleHost(t, s)
			sn := snapshotter(t, h, "x")
			_, err := sn.Stat(context.Background(), "a")
			if err == nil {
				t.Fatal("call to a plugin that cannot start succeeded")
			}
			t.Logf("error: %v", err)
			msg := err.Error()
			if !errdefs.IsUnavailable(err) || !strings.HasPrefix(msg, "snapshotter.x: plugin failed to start: ") || strings.Contains(msg, "\n") {
				t.Errorf("want one line, unavailable, naming snapshotter.x and that it failed to start: %q", msg)
			}
			for _, want := range tc.expect {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q: %q", want, msg)
				}
			}
			st := wantState(t, h, pluginhost.StateFailed)
			if st.LastError == "" || st.Restarts != 0 {
				t.Errorf("status after a failed start: %+v", st)
			}
			if tc.fix == nil {
				return
			}
			tc.fix(t, s.Path)
			if _, err := sn.Prepare(context.Background(), "a", ""); err != nil {
				t.Fatalf("call once the plugin can start: %v", err)
			}
			wantState(t, h, pluginhost.StateRunning)
		})
	}
}

// A plugin started on demand is supervised like any: its crash is a
// restart (an idle stop is not: TestStartOnDemandAndIdleStop).
func TestCrashAfterIdleStartIsARestart(t *testing.T) {
	s := spec(t, "mem", filepath.Join(bin, "memsnap"))
	s.Lazy, s.IdleStop = true, time.Minute
	h, _ := idleHost(t, s)
	sn := snapshotter(t, h, "mem")
	if _, err := sn.Prepare(context.Background(), "a", ""); err != nil {
		t.Fatal(err)
	}
	old := wantState(t, h, pluginhost.StateRunning)
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restart", 10*time.Second, func() bool {
		st := onlyStatus(t, h)
		return st.State == pluginhost.StateRunning && st.Pid != old.Pid
	})
	if st := onlyStatus(t, h); st.Restarts != 1 {
		t.Errorf("a crash of a plugin started on demand: %+v, want one restart", st)
	}
}

// Passive calls (keeld's event subscription, the busy hook) neither start
// a plugin nor hold it: one waits for the plugin to run, a passive stream
// open at an idle stop is ended by it, and a host stopping ends the wait.
func TestPassiveCalls(t *testing.T) {
	const idle = 300 * time.Millisecond
	s := spec(t, "mem", filepath.Join(bin, "memsnap"))
	s.Lazy, s.IdleStop = true, idle
	tap := &logTap{t: t}
	h := pluginhost.New(hclog.New(&hclog.LoggerOptions{Name: "keeld", Level: hclog.Debug, Output: tap}))
	if err := h.Start(context.Background(), []pluginhost.Spec{s}); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = h.Stop(context.Background())
		}
	})
	sn := snapshotter(t, h, "mem")
	passive := pluginhost.Passive(context.Background())

	waited := make(chan error, 1)
	go func() { _, err := sn.Stat(passive, "p"); waited <- err }()
	time.Sleep(3 * idle)
	wantState(t, h, pluginhost.StateIdle)
	select {
	case err := <-waited:
		t.Fatalf("a passive call on an idle plugin returned: %v", err)
	default:
	}
	if _, err := sn.Prepare(context.Background(), "a", ""); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; !errdefs.IsNotFound(err) {
		t.Errorf("the passive call once the plugin runs: %v, want not found from the plugin", err)
	}

	walk := make(chan error, 1)
	go func() {
		walk <- sn.Walk(passive, func(context.Context, snapshot.Info) error { return nil }, "block")
	}()
	waitState(t, h, pluginhost.StateIdle, 10*time.Second)
	select {
	case err := <-walk:
		if err == nil {
			t.Error("a passive stream open at an idle stop ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a passive stream held the idle stop up")
	}

	go func() { _, err := sn.Stat(passive, "p"); waited <- err }()
	stopped = true
	if err := h.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "snapshotter.mem: plugin is stopped") {
			t.Errorf("a passive call when the host stops: %v, want unavailable, stopped", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a passive call still waits after the host stopped")
	}
}
