package runc

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
)

// TestRemoveTaskDirKeepsTheRootfs: removing a task dir whose rootfs is
// still mounted unmounts it first, never deleting the files it shows.
func TestRemoveTaskDirKeepsTheRootfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	snapshot := t.TempDir()
	if err := os.WriteFile(filepath.Join(snapshot, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "task")
	rootfs := filepath.Join(dir, shim.BundleDir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	for range 2 { // stacked, as a rootfs may be
		if err := unix.Mount(snapshot, rootfs, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { shim.UnmountAll(rootfs) })
	removeTaskDir(dir)
	if fileExists(dir) {
		t.Errorf("task dir %s still there", dir)
	}
	if !fileExists(filepath.Join(snapshot, "precious")) {
		t.Fatal("removing the task dir deleted a file of its mounted rootfs")
	}
}
