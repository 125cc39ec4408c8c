package pluginhost_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/load"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// bin holds the test plugins and the test host, built by TestMain.
var bin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "pluginhost-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", dir+"/",
			"./testdata/memsnap", "./testdata/wrongkind", "./testdata/v2only", "./testdata/host",
			"../../plugins/snapshotter-native")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building test plugins:", err)
			return 1
		}
		bin = dir
		return load.Main(m)
	}())
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "keeld", Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func spec(t *testing.T, name, path string) pluginhost.Spec {
	dir := t.TempDir()
	return pluginhost.Spec{Kind: "snapshotter", Name: name, Path: path,
		Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state")}
}

// startHost starts specs on a new host that the test stops on cleanup.
func startHost(t *testing.T, specs []pluginhost.Spec, opts ...pluginhost.Option) *pluginhost.Host {
	t.Helper()
	h := pluginhost.New(testLogger(t), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := h.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if err := h.Start(ctx, specs); err != nil {
		t.Fatalf("start: %v", err)
	}
	return h
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func snapshotter(t *testing.T, h *pluginhost.Host, name string) snapshot.Snapshotter {
	t.Helper()
	conn, err := h.Conn("snapshotter", name)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot.NewClient(conn)
}

func onlyStatus(t *testing.T, h *pluginhost.Host) pluginhost.Status {
	t.Helper()
	st := h.Plugins()
	if len(st) != 1 {
		t.Fatalf("Plugins() = %+v, want one", st)
	}
	return st[0]
}

// alive tells whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartAndCall(t *testing.T) {
	path := filepath.Join(bin, "memsnap")
	s := spec(t, "mem", path)
	s.SHA256 = "sha256:" + fileDigest(t, path)
	h := startHost(t, []pluginhost.Spec{s})

	st := onlyStatus(t, h)
	if st.State != pluginhost.StateRunning || st.Pid <= 0 || st.Version != "0.1.0" || st.Restarts != 0 ||
		st.Path != path || st.Kind != "snapshotter" || st.Name != "mem" {
		t.Fatalf("status = %+v", st)
	}
	if len(st.Capabilities) != 1 || st.Capabilities[0] != snapshot.CapabilityCleanup {
		t.Errorf("capabilities = %v, want [cleanup]", st.Capabilities)
	}
	if !alive(st.Pid) {
		t.Errorf("pid %d is not running", st.Pid)
	}

	ctx := context.Background()
	sn := snapshotter(t, h, "mem")
	if _, err := sn.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	_, err := sn.Prepare(ctx, "a", "")
	if !errdefs.IsAlreadyExists(err) || !strings.HasPrefix(err.Error(), "snapshotter.mem: ") {
		t.Errorf("prepare twice: %v, want already exists prefixed with the plugin", err)
	}
	_, err = sn.Stat(ctx, "missing")
	if !errdefs.IsNotFound(err) || !strings.HasPrefix(err.Error(), "snapshotter.mem: ") {
		t.Errorf("stat missing: %v, want not found prefixed with the plugin", err)
	}

	if _, err := h.Conn("snapshotter", "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("conn to an unknown plugin: %v, want not found", err)
	}

	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := onlyStatus(t, h); st.State != pluginhost.StateStopped || st.Pid != 0 {
		t.Errorf("status after stop = %+v", st)
	}
	waitFor(t, "the plugin to exit", 5*time.Second, func() bool { return !alive(st.Pid) })
	_, err = sn.Stat(ctx, "a")
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "snapshotter.mem: plugin is stopped") {
		t.Errorf("call after stop: %v, want unavailable naming the plugin", err)
	}
}

// A plugin's env reaches its process over keeld's own environment; the
// handshake's variables stay the host's.
func TestPluginEnv(t *testing.T) {
	t.Setenv("GOGC", "100")
	s := spec(t, "mem", filepath.Join(bin, "memsnap"))
	s.Env = map[string]string{"GOGC": "50", "KEEL_TEST_ENV": "x y", "PLUGIN_MIN_PORT": "7"}
	h := startHost(t, []pluginhost.Spec{s})
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", onlyStatus(t, h).Pid))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for kv := range strings.SplitSeq(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			got[k] = v // the last one wins, as for getenv
		}
	}
	for k, want := range map[string]string{"GOGC": "50", "KEEL_TEST_ENV": "x y"} {
		if got[k] != want {
			t.Errorf("plugin env %s = %q, want %q", k, got[k], want)
		}
	}
	if got["PLUGIN_MIN_PORT"] == "7" {
		t.Error("the plugin's env set the handshake's PLUGIN_MIN_PORT")
	}
}

func TestStartFailures(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.sh")
	if err := os.WriteFile(junk, []byte("#!/bin/sh\necho hello there\necho more junk\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	memsnap := filepath.Join(bin, "memsnap")
	realDigest := fileDigest(t, memsnap)
	wrongDigest := strings.Repeat("ab", 32)
	trueBin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		path   string
		sha    string
		class  func(error) bool
		expect []string
		// setting is what of the spec the StartError names.
		setting string
	}{
		{"BadChecksum", memsnap, wrongDigest, errdefs.IsFailedPrecondition,
			[]string{memsnap, "sha256 mismatch", wrongDigest, realDigest}, "sha256"},
		{"NotAPlugin", trueBin, "", errdefs.IsFailedPrecondition,
			[]string{trueBin, "is not a keel plugin"}, "path"},
		{"PrintsJunk", junk, "", errdefs.IsFailedPrecondition,
			[]string{junk, "is not a keel plugin", "hello there"}, "path"},
		{"WrongKind", filepath.Join(bin, "wrongkind"), "", errdefs.IsFailedPrecondition,
			[]string{`is a "content" plugin, the config declares it "snapshotter"`}, "kind"},
		{"ProtocolVersion2", filepath.Join(bin, "v2only"), "", errdefs.IsFailedPrecondition,
			[]string{"speaks another plugin protocol than keeld (1)"}, "path"},
		{"Missing", filepath.Join(dir, "nothing-here"), "", errdefs.IsNotFound,
			[]string{filepath.Join(dir, "nothing-here")}, "path"},
		// memsnap takes no config: Configure refuses the key.
		{"UnknownConfigKey", memsnap, "", errdefs.IsInvalidArgument,
			[]string{`config key "bogus": unknown key`}, "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := pluginhost.New(testLogger(t))
			t.Cleanup(func() { _ = h.Stop(context.Background()) })
			s := spec(t, "x", tc.path)
			s.SHA256 = tc.sha
			if tc.setting == "config" {
				s.Config = []byte(`{"bogus": 1}`)
			}
			began := time.Now()
			err := h.Start(context.Background(), []pluginhost.Spec{s})
			took := time.Since(began)
			if err == nil {
				t.Fatal("start succeeded")
			}
			t.Logf("error: %v (after %s)", err, took)
			if !tc.class(err) {
				t.Errorf("wrong class: %v", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "snapshotter.x: ") || strings.Contains(msg, "\n") {
				t.Errorf("want one line naming snapshotter.x: %q", msg)
			}
			for _, want := range tc.expect {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q: %q", want, msg)
				}
			}
			var se *pluginhost.StartError
			if !errors.As(err, &se) || se.Kind != "snapshotter" || se.Name != "x" || se.Setting != tc.setting ||
				(tc.setting == "config" && se.Key != "bogus") {
				t.Errorf("StartError %+v, want setting %q of snapshotter.x", se, tc.setting)
			}
			if took > 5*time.Second {
				t.Errorf("failing took %s", took)
			}
			if st := onlyStatus(t, h); st.State == pluginhost.StateRunning || st.Pid != 0 {
				t.Errorf("status after a failed start = %+v", st)
			}
		})
	}
}

// A failure of one plugin stops the others Start launched.
func TestStartFailureStopsAll(t *testing.T) {
	h := pluginhost.New(testLogger(t))
	t.Cleanup(func() { _ = h.Stop(context.Background()) })
	good := spec(t, "good", filepath.Join(bin, "memsnap"))
	bad := spec(t, "bad", filepath.Join(bin, "wrongkind"))
	err := h.Start(context.Background(), []pluginhost.Spec{good, bad})
	if err == nil || !strings.Contains(err.Error(), "snapshotter.bad: ") {
		t.Fatalf("start: %v, want an error naming snapshotter.bad", err)
	}
	for _, st := range h.Plugins() {
		if st.Pid != 0 || st.State == pluginhost.StateRunning {
			t.Errorf("after a failed start: %+v", st)
		}
	}
	out, _ := exec.Command("pgrep", "-P", fmt.Sprint(os.Getpid()), "-f", "memsnap").Output()
	if pids := strings.Fields(string(out)); len(pids) != 0 {
		t.Errorf("memsnap processes left: %v", pids)
	}
}

func TestRestartAfterKill(t *testing.T) {
	s := spec(t, "mem", filepath.Join(bin, "memsnap"))
	h := startHost(t, []pluginhost.Spec{s}, pluginhost.WithBackoff(300*time.Millisecond, time.Second))
	sn := snapshotter(t, h, "mem")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sn.Prepare(ctx, "before", ""); err != nil {
		t.Fatal(err)
	}
	old := onlyStatus(t, h)

	unary := make(chan error, 1)
	go func() {
		_, err := sn.Stat(ctx, "block")
		unary <- err
	}()
	walk := make(chan error, 1)
	go func() {
		walk <- sn.Walk(ctx, func(context.Context, snapshot.Info) error { return nil }, "block")
	}()
	waitFor(t, "both calls to reach the plugin", 10*time.Second, func() bool {
		for _, f := range []string{"stat-blocked", "walk-blocked"} {
			if _, err := os.Stat(filepath.Join(s.Root, f)); err != nil {
				return false
			}
		}
		return true
	})
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"unary call": unary, "stream": walk} {
		err := <-ch
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "snapshotter.mem: plugin exited") {
			t.Errorf("%s in flight: %v, want unavailable naming the plugin", name, err)
		}
	}

	waitFor(t, "the host to see the exit", 5*time.Second, func() bool {
		return onlyStatus(t, h).State != pluginhost.StateRunning
	})
	_, err := sn.Stat(ctx, "before")
	if st := onlyStatus(t, h); st.State == pluginhost.StateRestarting {
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "snapshotter.mem: plugin is restarting") {
			t.Errorf("call while restarting: %v, want unavailable naming the plugin", err)
		}
	}

	waitFor(t, "the restart", 10*time.Second, func() bool {
		return onlyStatus(t, h).State == pluginhost.StateRunning
	})
	st := onlyStatus(t, h)
	if st.Restarts != 1 || st.Pid == old.Pid || st.Pid == 0 {
		t.Errorf("status after restart = %+v (old pid %d)", st, old.Pid)
	}
	// The same client reaches the new process.
	if _, err := sn.Prepare(ctx, "after", ""); err != nil {
		t.Errorf("prepare after restart: %v", err)
	}
	if _, err := sn.Stat(ctx, "after"); err != nil {
		t.Errorf("stat after restart: %v", err)
	}
}

// A plugin held by SIGSTOP is reported unresponsive, never killed, however
// long past the hang timeout; once continued it is running again, the same
// process.
func TestStoppedPluginIsNotRestarted(t *testing.T) {
	h := startHost(t, []pluginhost.Spec{spec(t, "mem", filepath.Join(bin, "memsnap"))},
		pluginhost.WithBackoff(10*time.Millisecond, time.Second),
		pluginhost.WithHealthCheck(50*time.Millisecond, 100*time.Millisecond),
		pluginhost.WithHangTimeout(300*time.Millisecond))
	old := onlyStatus(t, h)
	if err := syscall.Kill(old.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(old.Pid, syscall.SIGCONT) })
	waitFor(t, "the stopped plugin to be reported unresponsive", 10*time.Second, func() bool {
		return onlyStatus(t, h).State == pluginhost.StateUnresponsive
	})
	time.Sleep(2 * time.Second) // several hang timeouts
	st := onlyStatus(t, h)
	if st.State != pluginhost.StateUnresponsive || st.Pid != old.Pid || st.Restarts != 0 ||
		!strings.Contains(st.LastError, "stopped by a signal") {
		t.Errorf("status of a plugin stopped past its hang timeout = %+v; want unresponsive, pid %d, no restart, the reason", st, old.Pid)
	}
	if !alive(old.Pid) {
		t.Fatal("the stopped plugin was killed")
	}
	if err := syscall.Kill(old.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the continued plugin to answer", 10*time.Second, func() bool {
		return onlyStatus(t, h).State == pluginhost.StateRunning
	})
	if st := onlyStatus(t, h); st.Pid != old.Pid || st.Restarts != 0 {
		t.Errorf("status after SIGCONT = %+v; want the same process, no restart", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := snapshotter(t, h, "mem").Prepare(ctx, "x", ""); err != nil {
		t.Errorf("prepare after SIGCONT: %v", err)
	}
}

// A plugin whose process runs but answers nothing (its connections cut)
// is killed and restarted once the hang timeout has passed, not before.
func TestWedgedPluginIsRestarted(t *testing.T) {
	const hang = 2 * time.Second
	h := startHost(t, []pluginhost.Spec{spec(t, "mem", filepath.Join(bin, "memsnap"))},
		pluginhost.WithBackoff(10*time.Millisecond, time.Second),
		pluginhost.WithHealthCheck(50*time.Millisecond, 100*time.Millisecond),
		pluginhost.WithHangTimeout(hang))
	old := onlyStatus(t, h)
	t.Cleanup(func() { _ = syscall.Kill(old.Pid, syscall.SIGKILL) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sn := snapshotter(t, h, "mem")
	wedged := time.Now()
	// Its reply may be cut off too.
	if _, err := sn.Stat(ctx, "wedge"); err != nil && !errdefs.IsUnavailable(err) {
		t.Fatal(err)
	}
	waitFor(t, "the wedged plugin to be reported unresponsive", 10*time.Second, func() bool {
		return onlyStatus(t, h).State == pluginhost.StateUnresponsive
	})
	waitFor(t, "the wedged plugin to be replaced", 20*time.Second, func() bool {
		st := onlyStatus(t, h)
		return st.State == pluginhost.StateRunning && st.Pid != old.Pid
	})
	if took := time.Since(wedged); took < hang {
		t.Errorf("wedged plugin replaced after %s, before its hang timeout %s", took, hang)
	}
	if st := onlyStatus(t, h); st.Restarts != 1 || !strings.Contains(st.LastError, "hung") {
		t.Errorf("status = %+v", st)
	}
	waitFor(t, "the wedged plugin to die", 5*time.Second, func() bool { return !alive(old.Pid) })
	if _, err := sn.Prepare(ctx, "x", ""); err != nil {
		t.Errorf("prepare after restart: %v", err)
	}
}

// Messages far above gRPC's 4 MiB default pass both ways, unary and streamed.
func TestLargeMessages(t *testing.T) {
	h := startHost(t, []pluginhost.Spec{spec(t, "mem", filepath.Join(bin, "memsnap"))})
	sn := snapshotter(t, h, "mem")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	labels := map[string]string{}
	for i := range 8 {
		labels[fmt.Sprintf("big.%d", i)] = strings.Repeat(string(rune('a'+i)), 1<<20)
	}
	if _, err := sn.Prepare(ctx, "big", "", snapshot.WithLabels(labels)); err != nil {
		t.Fatalf("prepare with 8 MiB of labels: %v", err)
	}
	info, err := sn.Stat(ctx, "big")
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	check := func(how string, got map[string]string) {
		if len(got) != len(labels) {
			t.Fatalf("%s: %d labels, want %d", how, len(got), len(labels))
		}
		for k, v := range labels {
			if got[k] != v {
				t.Fatalf("%s: label %s differs", how, k)
			}
		}
	}
	check("stat", info.Labels)
	n := 0
	err = sn.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		n++
		check("walk", info.Labels)
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("walk: %v (%d snapshots)", err, n)
	}
}

// When the host dies by SIGKILL its plugins die with it, and a new host can
// at once run the same plugin on the same root.
func TestHostKilledTakesPluginsAlong(t *testing.T) {
	// Orphaned plugins are reparented to this process, which reaps them: so
	// their end is seen, whatever the machine's init does with zombies.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become a subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	dir := t.TempDir()
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")

	runHost := func() (*exec.Cmd, pluginhost.Status) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "host"), filepath.Join(bin, "memsnap"), root, state)
		cmd.Stderr = testWriter{t}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		line, err := bufio.NewReader(out).ReadBytes('\n')
		if err != nil {
			t.Fatalf("host printed no status: %v", err)
		}
		var st []pluginhost.Status
		if err := json.Unmarshal(line, &st); err != nil || len(st) != 1 || st[0].State != pluginhost.StateRunning {
			t.Fatalf("host status %q: %v", line, err)
		}
		t.Cleanup(func() { _ = syscall.Kill(st[0].Pid, syscall.SIGKILL) })
		return cmd, st[0]
	}

	host, st := runHost()
	if err := host.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()

	// Start the next host at once: it waits for the old plugin to let go of
	// the root.
	next, nst := runHost()
	if nst.Pid == st.Pid {
		t.Fatalf("new host reports the old plugin pid %d", st.Pid)
	}

	var ws unix.WaitStatus
	waitFor(t, "the orphaned plugin to die", 5*time.Second, func() bool {
		pid, err := unix.Wait4(st.Pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) { // reaped by someone else
			return !alive(st.Pid)
		}
		return pid == st.Pid
	})
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", st.Pid)); err == nil {
		t.Errorf("plugin %d still exists", st.Pid)
	}

	if err := next.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- next.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("host exited: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("host did not stop on SIGTERM")
	}
	waitFor(t, "the second plugin to stop with its host", 5*time.Second, func() bool { return !alive(nst.Pid) })
}

// The real native snapshotter, killed, comes back on the same root with its
// snapshots, reached through the same client.
func TestRestartNativeKeepsItsData(t *testing.T) {
	h := startHost(t, []pluginhost.Spec{spec(t, "native", filepath.Join(bin, "snapshotter-native"))},
		pluginhost.WithBackoff(10*time.Millisecond, time.Second))
	sn := snapshotter(t, h, "native")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sn.Prepare(ctx, "work", ""); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "layer", "work"); err != nil {
		t.Fatal(err)
	}
	old := onlyStatus(t, h)
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restart", 10*time.Second, func() bool {
		st := onlyStatus(t, h)
		return st.State == pluginhost.StateRunning && st.Pid != old.Pid
	})
	info, err := sn.Stat(ctx, "layer")
	if err != nil || info.Kind != snapshot.KindCommitted {
		t.Fatalf("stat after restart: %+v, %v", info, err)
	}
	if _, err := sn.Stat(ctx, "work"); !errdefs.IsNotFound(err) || !strings.HasPrefix(err.Error(), "snapshotter.native: ") {
		t.Errorf("stat of the committed key: %v, want not found naming the plugin", err)
	}
}

// A restart that fails is retried with backoff; calls meanwhile say why the
// plugin is down, and the plugin comes back once its file is fixed.
func TestRestartFailsThenRecovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keel-snapshotter-mem")
	copyFile(t, filepath.Join(bin, "memsnap"), path)
	h := startHost(t, []pluginhost.Spec{spec(t, "mem", path)},
		pluginhost.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	sn := snapshotter(t, h, "mem")

	broken := filepath.Join(dir, "broken")
	copyFile(t, "/bin/true", broken)
	if err := os.Rename(broken, path); err != nil {
		t.Fatal(err)
	}
	old := onlyStatus(t, h)
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failed restarts", 10*time.Second, func() bool {
		st := onlyStatus(t, h)
		return st.State == pluginhost.StateFailed && st.Restarts >= 2
	})
	st := onlyStatus(t, h)
	if !strings.Contains(st.LastError, "is not a keel plugin") {
		t.Errorf("last error = %q", st.LastError)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := sn.Stat(ctx, "x")
	if !errdefs.IsUnavailable(err) || !strings.HasPrefix(err.Error(), "snapshotter.mem: plugin is down: ") {
		t.Errorf("call while down: %v, want unavailable saying why", err)
	}

	copyFile(t, filepath.Join(bin, "memsnap"), broken)
	if err := os.Rename(broken, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the recovery", 10*time.Second, func() bool {
		return onlyStatus(t, h).State == pluginhost.StateRunning
	})
	if _, err := sn.Prepare(ctx, "x", ""); err != nil {
		t.Errorf("prepare after recovery: %v", err)
	}
}
