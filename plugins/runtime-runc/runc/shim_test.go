package runc_test

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

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/test/conformance"
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
	rt, err := runc.New(context.Background(), sdk.Env{Root: t.TempDir(), State: state, Config: []byte(`{}`), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt, state
}

func createTask(t *testing.T, rt keelruntime.Runtime, id string, spec *keelruntime.CreateOpts) error {
	t.Helper()
	mounts, err := conformance.BusyboxRootfs(filepath.Join(t.TempDir(), "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	spec.ID, spec.Rootfs = id, mounts
	_, err = rt.Create(context.Background(), *spec)
	if err == nil {
		t.Cleanup(func() {
			ctx := context.Background()
			rt.Kill(ctx, id, "", syscall.SIGKILL, true)
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rt.Wait(wctx, id, "")
			cancel()
			rt.Delete(ctx, id, "")
		})
	}
	return err
}

// TestShimKilled: a task whose shim dies is reported exited with a reason,
// its Wait ends, its container is killed, and Delete cleans up.
func TestShimKilled(t *testing.T) {
	rt, state := openDirect(t)
	ctx := context.Background()
	events, _ := rt.Events(ctx)
	if err := createTask(t, rt, "victim", &keelruntime.CreateOpts{Spec: conformance.RuntimeSpec("sleep", "60")}); err != nil {
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
	b, err := os.ReadFile(filepath.Join(state, "tasks", "victim", shim.PidFile))
	if err != nil {
		t.Fatal(err)
	}
	shimPid, _ := strconv.Atoi(string(b))
	if err := syscall.Kill(shimPid, syscall.SIGKILL); err != nil {
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
	spec := conformance.RuntimeSpec("true")
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
	if caps := rt.(sdk.Capable).Capabilities(); len(caps) > 0 {
		t.Skip("CRIU works here: the conformance case CheckpointRestore covers checkpoints")
	}
	ctx := context.Background()
	if err := createTask(t, rt, "cr", &keelruntime.CreateOpts{Spec: conformance.RuntimeSpec("sleep", "60")}); err != nil {
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
