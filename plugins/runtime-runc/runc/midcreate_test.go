package runc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// createArg, as the test binary's first argument, makes it a plugin that
// creates one task and waits to be killed: a plugin killed mid-create.
const createArg = "create-and-wait"

// createAndWait is the test binary as a plugin: args are the state dir,
// the plugin's config and the task id.
func createAndWait(args []string) int {
	state, cfg, id := args[0], args[1], args[2]
	rt, err := runc.New(context.Background(), sdk.Env{Root: state, State: state, Config: []byte(cfg), Logger: hclog.NewNullLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mounts, err := fixture.BusyboxRootfs(filepath.Join(state, "rootfs-src"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, err = rt.Create(context.Background(), keelruntime.CreateOpts{ID: id, Spec: fixture.RuntimeSpec("sleep", "600"), Rootfs: mounts})
	fmt.Fprintln(os.Stderr, "create:", err)
	select {}
}

// TestPluginKilledMidCreate: the plugin is SIGKILLed while its new shim is
// inside runc create (slowed down by a wrapper). The restarted plugin must
// not leave the task unknown while the shim lives: once the create ends
// the task is created (or stopped with the reason), and removable.
func TestPluginKilledMidCreate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containers")
	}
	runcPath, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("no runc")
	}
	state, err := os.MkdirTemp("", "keel-runc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	wrapper := filepath.Join(state, "slow-runc")
	// The wrapper marks that the create has begun, then holds it 3s.
	inCreate := filepath.Join(state, "in-create")
	script := "#!/bin/sh\nfor a; do [ \"$a\" = create ] && : > " + inCreate + " && sleep 3; done\nexec " + runcPath + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(runc.Config{Runtime: wrapper})
	const id = "midcreate"
	plugin := exec.Command(os.Args[0], createArg, state, string(cfg), id)
	plugin.Stderr = os.Stderr
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	defer plugin.Process.Kill()
	// Killed once its shim is inside create.
	deadline := time.Now().Add(20 * time.Second)
	for !fileExists(inCreate) {
		if time.Now().After(deadline) {
			t.Fatal("the shim did not begin the create")
		}
		time.Sleep(20 * time.Millisecond)
	}
	plugin.Process.Signal(syscall.SIGKILL)
	plugin.Wait()

	rt, err := runc.New(context.Background(), sdk.Env{Root: state, State: state, Config: cfg, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	removeAtEnd(t, rt, id)
	ctx := context.Background()
	var st keelruntime.TaskState
	deadline = time.Now().Add(15 * time.Second)
	for {
		st, err = rt.State(ctx, id, "")
		if err == nil && st.Status != keelruntime.StatusUnknown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %s after the create ended: %v", st.Status, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st.Status == keelruntime.StatusStopped && !strings.Contains(st.Reason, "create") {
		t.Errorf("stopped without a reason naming the create: %+v", st)
	}
}
