package runc_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// TestRestartSweepsStale: a restarted plugin removes the shim sockets and
// shim temp dirs no task owns (a plugin or shim killed mid-create leaves
// them), and keeps a live task's.
func TestRestartSweepsStale(t *testing.T) {
	rt, state := openDirect(t)
	if err := createTask(t, rt, "live", &keelruntime.CreateOpts{Spec: fixture.RuntimeSpec("sleep", "600")}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(context.Background(), "live", ""); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(state, "s")
	own, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(own) != 2 {
		t.Fatalf("a task's entries in %s: %v, want its socket and temp dir", dir, own)
	}
	stale := []string{filepath.Join(dir, "0123456789abcdef.sock"), filepath.Join(dir, "0123456789abcdef.tmp")}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale[0], Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if err := os.MkdirAll(filepath.Join(stale[1], "pty123"), 0o700); err != nil {
		t.Fatal(err)
	}
	rt.Close()
	removeAtEnd(t, reopenDirect(t, state), "live")
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if !slices.Equal(left, own) {
		t.Errorf("after a restart %s holds %v, want %v", dir, left, own)
	}
}
