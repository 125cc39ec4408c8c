package runc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// openDirect builds the runtime in this process, without gRPC: these tests
// look into its state dir.
func openDirect(t *testing.T) (keelruntime.Runtime, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containers")
	}
	state, err := os.MkdirTemp("", "keel-runc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	return reopenDirect(t, state), state
}

// reopenDirect builds the runtime on state, as a restarted plugin would.
func reopenDirect(t *testing.T, state string) keelruntime.Runtime {
	t.Helper()
	rt, err := runc.New(context.Background(), sdk.Env{Root: t.TempDir(), State: state, Config: []byte(`{}`), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func shimPid(t *testing.T, state, id string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "tasks", id, shim.PidFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// running tells whether pid is a process that has not ended (a zombie has).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(b), ") Z")
}

// TestShimStoppedAcrossRestart: a shim that does not answer (SIGSTOP)
// when the plugin restarts is not taken for dead. Its task is unknown,
// with the reason; calls fail Unavailable; nothing is killed. After
// SIGCONT the task is running again and is killed and waited normally.
func TestShimStoppedAcrossRestart(t *testing.T) {
	rt, state := openDirect(t)
	// Bounded: a call that waits on the stopped shim fails the test, not CI.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel) // after the cleanups that use ctx
	if err := createTask(t, rt, "sleepy", &keelruntime.CreateOpts{Spec: fixture.RuntimeSpec("sleep", "600")}); err != nil {
		t.Fatal(err)
	}
	pid, err := rt.Start(ctx, "sleepy", "")
	if err != nil {
		t.Fatal(err)
	}
	sp := shimPid(t, state, "sleepy")
	rt.Close()
	cont := testkit.StopProcess(t, sp, 30*time.Second)
	defer cont()

	rt = reopenDirect(t, state)
	removeAtEnd(t, rt, "sleepy")
	t.Cleanup(cont)
	st, err := rt.State(ctx, "sleepy", "")
	wantReason := fmt.Sprintf("shim pid %d not answering", sp)
	if err != nil || st.Status != keelruntime.StatusUnknown || !strings.Contains(st.Reason, wantReason) || st.Pid != pid {
		t.Errorf("state with the shim stopped: %+v, %v; want unknown, pid %d, a reason with %q", st, err, pid, wantReason)
	}
	list, err := rt.List(ctx)
	if err != nil || len(list) != 1 || list[0].Status != keelruntime.StatusUnknown || list[0].Reason == "" {
		t.Errorf("list with the shim stopped: %+v, %v; want the task unknown with a reason", list, err)
	}
	if err := rt.Kill(ctx, "sleepy", "", syscall.SIGKILL, true); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), wantReason) {
		t.Errorf("kill with the shim stopped: %v, want Unavailable naming the reason", err)
	}
	if _, err := rt.Delete(ctx, "sleepy", ""); !errdefs.IsUnavailable(err) {
		t.Errorf("delete with the shim stopped: %v, want Unavailable", err)
	}
	// Long past every bound of a call: still not dead.
	time.Sleep(3 * time.Second)
	if st, _ := rt.State(ctx, "sleepy", ""); st.Status != keelruntime.StatusUnknown {
		t.Errorf("state 3s later with the shim stopped: %+v, want unknown", st)
	}
	if !running(int(pid)) || !running(sp) {
		t.Fatalf("container %d or shim %d ended while the shim was stopped", pid, sp)
	}

	cont()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err = rt.State(ctx, "sleepy", "")
		if err == nil && st.Status == keelruntime.StatusRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state 20s after SIGCONT: %+v, %v; want running", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Pid != pid {
		t.Errorf("pid after SIGCONT: %d, want %d", st.Pid, pid)
	}
	if err := rt.Kill(ctx, "sleepy", "", syscall.SIGKILL, false); err != nil {
		t.Fatalf("kill after SIGCONT: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if exit, err := rt.Wait(wctx, "sleepy", ""); err != nil || exit.Status != 137 {
		t.Errorf("wait after SIGCONT and kill: %+v, %v; want 137", exit, err)
	}
	if _, err := rt.Delete(ctx, "sleepy", ""); err != nil {
		t.Errorf("delete: %v", err)
	}
}

// TestShimDeadAtRestart: a shim killed while the plugin is down is found
// dead at its restart: the task is stopped with a reason, the container
// killed.
func TestShimDeadAtRestart(t *testing.T) {
	rt, state := openDirect(t)
	ctx := context.Background()
	if err := createTask(t, rt, "orphan", &keelruntime.CreateOpts{Spec: fixture.RuntimeSpec("sleep", "600")}); err != nil {
		t.Fatal(err)
	}
	pid, err := rt.Start(ctx, "orphan", "")
	if err != nil {
		t.Fatal(err)
	}
	sp := shimPid(t, state, "orphan")
	rt.Close()
	if err := syscall.Kill(sp, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for running(sp) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	rt = reopenDirect(t, state)
	removeAtEnd(t, rt, "orphan")
	st, err := rt.State(ctx, "orphan", "")
	if err != nil || st.Status != keelruntime.StatusStopped || !strings.Contains(st.Reason, "shim") {
		t.Errorf("state after the shim died with the plugin down: %+v, %v; want stopped with a reason", st, err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for running(int(pid)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if running(int(pid)) {
		t.Errorf("container init %d still runs after its shim died", pid)
	}
}

func createTask(t *testing.T, rt keelruntime.Runtime, id string, spec *keelruntime.CreateOpts) error {
	t.Helper()
	mounts, err := fixture.BusyboxRootfs(filepath.Join(t.TempDir(), "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	spec.ID, spec.Rootfs = id, mounts
	_, err = rt.Create(context.Background(), *spec)
	if err == nil {
		removeAtEnd(t, rt, id)
	}
	return err
}

// removeAtEnd kills and deletes task id through rt when the test ends.
func removeAtEnd(t *testing.T, rt keelruntime.Runtime, id string) {
	t.Cleanup(func() {
		ctx := context.Background()
		rt.Kill(ctx, id, "", syscall.SIGKILL, true)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rt.Wait(wctx, id, "")
		cancel()
		rt.Delete(ctx, id, "")
	})
}

// TestShimKilled: a task whose shim dies is reported exited with a reason,
// its Wait ends, its container is killed, and Delete cleans up.
func TestShimKilled(t *testing.T) {
	rt, state := openDirect(t)
	ctx := context.Background()
	events, _ := rt.Events(ctx)
	if err := createTask(t, rt, "victim", &keelruntime.CreateOpts{Spec: fixture.RuntimeSpec("sleep", "60")}); err != nil {
		t.Fatal(err)
	}
	pid, err := rt.Start(ctx, "victim", "")
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan keelruntime.ExitStatus, 1)
	go func() {
		st, _ := rt.Wait(ctx, "victim", "")
		waited <- st
	}()
	if err := syscall.Kill(shimPid(t, state, "victim"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-waited:
		if st.Status != 255 {
			t.Errorf("wait after the shim died: %d, want 255", st.Status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait still blocked 10s after the shim died")
	}
	st, err := rt.State(ctx, "victim", "")
	if err != nil || st.Status != keelruntime.StatusStopped || !strings.Contains(st.Reason, "shim") {
		t.Errorf("state after the shim died: %+v, %v; want stopped with a reason naming the shim", st, err)
	}
	if err := syscall.Kill(int(pid), 0); err == nil {
		// Reaped by init or still a zombie: look at its state.
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat"); len(b) > 0 && !strings.Contains(string(b), ") Z") {
			t.Errorf("container init %d still runs after its shim died", pid)
		}
	}
	if _, err := rt.Delete(ctx, "victim", ""); err != nil {
		t.Errorf("delete: %v", err)
	}
	var got []string
	timeout := time.After(5 * time.Second)
	for len(got) < 4 {
		select {
		case ev := <-events:
			got = append(got, ev.Topic)
		case <-timeout:
			t.Fatalf("events %v, want create, start, exit, delete", got)
		}
	}
	want := []string{keelruntime.TopicCreate, keelruntime.TopicStart, keelruntime.TopicExit, keelruntime.TopicDelete}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events %v, want %v", got, want)
	}
}

// TestOOMScoreAdjBelowParent: lowering oom_score_adj needs
// CAP_SYS_RESOURCE. Where root lacks it (a sandbox), Create fails with the
// runtime's reason, not obscurely; the default spec leaves it alone.
func TestOOMScoreAdjBelowParent(t *testing.T) {
	rt, _ := openDirect(t)
	b, _ := os.ReadFile("/proc/self/oom_score_adj")
	parent, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	spec := fixture.RuntimeSpec("true")
	adj := parent - 100
	if adj < -1000 {
		t.Skip("oom_score_adj already at its floor")
	}
	spec.Process.OOMScoreAdj = &adj
	err := createTask(t, rt, "oomadj", &keelruntime.CreateOpts{Spec: spec})
	if err == nil {
		t.Skip("this host lets root lower oom_score_adj (CAP_SYS_RESOURCE held)")
	}
	if !strings.Contains(err.Error(), "oom_score_adj") {
		t.Errorf("create with oom_score_adj %d below the parent's %d: %v, want an error naming oom_score_adj", adj, parent, err)
	}
}

// TestCheckpointReachesCRIU checks the checkpoint path up to CRIU where
// CRIU cannot work on this kernel (the conformance case runs where it can).
func TestCheckpointReachesCRIU(t *testing.T) {
	rt, _ := openDirect(t)
	if caps := rt.(sdk.Capable).Capabilities(); slices.Contains(caps, keelruntime.CapabilityCheckpoint) {
		t.Skip("CRIU works here: the conformance case CheckpointRestore covers checkpoints")
	}
	ctx := context.Background()
	if err := createTask(t, rt, "cr", &keelruntime.CreateOpts{Spec: fixture.RuntimeSpec("sleep", "60")}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, "cr", ""); err != nil {
		t.Fatal(err)
	}
	err := rt.Checkpoint(ctx, "cr", keelruntime.CheckpointOpts{Path: filepath.Join(t.TempDir(), "img"), Exit: true})
	if err == nil || !strings.Contains(err.Error(), "criu") {
		t.Fatalf("checkpoint where criu check fails: %v, want CRIU's error", err)
	}
	t.Logf("checkpoint reached CRIU, which failed: %v", err)
	if st, err := rt.State(ctx, "cr", ""); err != nil || st.Status != keelruntime.StatusRunning {
		t.Errorf("task after a failed checkpoint: %+v, %v; want running", st, err)
	}
	if err := rt.Checkpoint(ctx, "cr", keelruntime.CheckpointOpts{Path: "relative"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("checkpoint to a relative path: %v, want InvalidArgument", err)
	}
}
