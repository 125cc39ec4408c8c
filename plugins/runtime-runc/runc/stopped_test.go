package runc

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestShimStoppedWhileConnected: a shim stopped (SIGSTOP) under a running
// plugin makes its task unknown once its events call is overdue; calls
// fail Unavailable, nothing is killed, and after SIGCONT the task is
// running again, and is killed and waited normally.
func TestShimStoppedWhileConnected(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containers")
	}
	pollTimeout, pollGrace = 500*time.Millisecond, 500*time.Millisecond
	t.Cleanup(func() { pollTimeout, pollGrace = 30*time.Second, 10*time.Second })
	state := t.TempDir()
	rt, err := New(context.Background(), sdk.Env{Root: t.TempDir(), State: state, Config: []byte(`{}`), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	// Bounded: a call that waits on the stopped shim fails the test, not CI.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel) // after the cleanups that use ctx
	mounts, err := fixture.BusyboxRootfs(filepath.Join(t.TempDir(), "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(ctx, keelruntime.CreateOpts{ID: "held", Spec: fixture.RuntimeSpec("sleep", "600"), Rootfs: mounts}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rt.Kill(ctx, "held", "", syscall.SIGKILL, true)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rt.Wait(wctx, "held", "")
		cancel()
		rt.Delete(ctx, "held", "")
	})
	pid, err := rt.Start(ctx, "held", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(state, "tasks", "held", shim.PidFile))
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := strconv.Atoi(string(b))
	resume := testkit.StopProcess(t, sp, 30*time.Second)
	t.Cleanup(resume)

	r := rt.(*Runtime)
	waitUntil(t, 20*time.Second, "the task unknown", func() bool {
		task, err := r.get("held")
		if err != nil {
			t.Fatal(err)
		}
		_, unknown := task.conn()
		return unknown != ""
	})
	st, err := rt.State(ctx, "held", "")
	if err != nil || st.Status != keelruntime.StatusUnknown || !strings.Contains(st.Reason, "shim pid "+strconv.Itoa(sp)+" not answering") || st.Pid != pid {
		t.Errorf("state with the shim stopped: %+v, %v; want unknown with the reason and pid %d", st, err, pid)
	}
	if err := rt.Kill(ctx, "held", "", syscall.SIGKILL, false); !errdefs.IsUnavailable(err) {
		t.Errorf("kill with the shim stopped: %v, want Unavailable", err)
	}
	time.Sleep(2 * time.Second)
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat"); err != nil || strings.Contains(string(b), ") Z") {
		t.Fatalf("container %d ended while its shim was stopped", pid)
	}

	resume()
	waitUntil(t, 20*time.Second, "the task running again", func() bool {
		st, err := rt.State(ctx, "held", "")
		return err == nil && st.Status == keelruntime.StatusRunning
	})
	if err := rt.Kill(ctx, "held", "", syscall.SIGKILL, false); err != nil {
		t.Fatalf("kill after SIGCONT: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if exit, err := rt.Wait(wctx, "held", ""); err != nil || exit.Status != 137 {
		t.Errorf("wait after SIGCONT and kill: %+v, %v; want 137", exit, err)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
