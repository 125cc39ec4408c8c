package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// overlayPlugins run the overlay snapshotter as keeld's only one.
const overlayPlugins = `
plugin "snapshotter" "overlay" {
  path = "keel-snapshotter-overlay"
  config {
    mount_options = ["index=off"]
  }
}
plugin "content" "local" {
  path = "keel-content-local"
}
`

// TestOverlaySnapshots: through keeld and the CLI, a base layer, a child
// that deletes the base's file (a whiteout) and adds its own, mounted with
// the commands keel prints; then a 128-layer chain through the client,
// mounted as one overlay and read.
func TestOverlaySnapshots(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root to mount overlays")
	}
	e := newEnv(t)
	k := e.startWith(t, e.config(t, overlayPlugins))

	run := func(cmdline string) {
		t.Helper()
		if b, err := exec.Command("sh", "-c", cmdline).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", cmdline, err, b)
		}
	}
	base := mountDir(t, e, "base")
	run(k.ok("snapshot", "prepare", "base-active", "--target", base))
	for name, data := range map[string]string{"gone.txt": "base only\n", "kept.txt": "kept\n"} {
		if err := os.WriteFile(filepath.Join(base, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	unmount(t, base)
	k.ok("snapshot", "commit", "base", "base-active")

	child := mountDir(t, e, "child")
	out := k.ok("snapshot", "prepare", "child-active", "base", "--target", child)
	if !strings.HasPrefix(out, "mount -t overlay ") || !strings.Contains(out, "index=off") {
		t.Fatalf("prepare on base printed %q, want an overlay mount with index=off", out)
	}
	run(out)
	readFile(t, filepath.Join(child, "kept.txt"), "kept\n")
	if err := os.Remove(filepath.Join(child, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(child, "child.txt"), []byte("child\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount(t, child)
	k.ok("snapshot", "commit", "child-1", "child-active")

	var ms []mount.Mount
	k.okJSON(&ms, "snapshot", "view", "child-view", "child-1", "--target", "/unused")
	view := mountDir(t, e, "view")
	if err := mount.All(ms, view); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(view, "child.txt"), "child\n")
	readFile(t, filepath.Join(view, "kept.txt"), "kept\n")
	if _, err := os.Stat(filepath.Join(view, "gone.txt")); !os.IsNotExist(err) {
		t.Errorf("the child's deletion does not hide the base's file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(view, "x"), nil, 0o644); err == nil {
		t.Error("a view is writable")
	}
	unmount(t, view)

	// 128 layers through the client.
	ctx := context.Background()
	sn := k.client(t, "default").SnapshotService("")
	parent := ""
	layer := mountDir(t, e, "layer")
	for i := range 128 {
		key, name := fmt.Sprintf("deep-%03d-active", i), fmt.Sprintf("deep-%03d", i)
		ms, err := sn.Prepare(ctx, key, parent)
		if err != nil {
			t.Fatal(err)
		}
		if err := mount.All(ms, layer); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		err = os.WriteFile(filepath.Join(layer, name), []byte(name), 0o644)
		unmount(t, layer)
		if err != nil {
			t.Fatal(err)
		}
		if err := sn.Commit(ctx, name, key); err != nil {
			t.Fatal(err)
		}
		parent = name
	}
	ms, err := sn.View(ctx, "deep-view", parent)
	if err != nil {
		t.Fatal(err)
	}
	deep := mountDir(t, e, "deep")
	if err := mount.All(ms, deep); err != nil {
		t.Fatalf("mount the 128-layer view: %v", err)
	}
	entries, err := os.ReadDir(deep)
	if err != nil || len(entries) != 128 {
		t.Fatalf("128-layer view shows %d entries, %v", len(entries), err)
	}
	readFile(t, filepath.Join(deep, "deep-000"), "deep-000")
	var st unix.Statfs_t
	if err := unix.Statfs(deep, &st); err != nil || st.Type != unix.OVERLAYFS_SUPER_MAGIC {
		t.Errorf("the 128-layer view is not an overlay: %x, %v", st.Type, err)
	}
}
