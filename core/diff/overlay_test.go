package diff

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// overlayOf mounts lower (read-only), upper and work under dir and returns
// the mount point; it is unmounted when the test ends.
func overlayOf(t *testing.T, tmp, lower string) (merged, upper string) {
	t.Helper()
	upper, work, merged := filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"), filepath.Join(tmp, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := mount.Overlay([]string{lower}, upper, work)
	if err := m.Mount(merged); err != nil {
		testkit.SkipOrFail(t, "overlay mount: %v", err)
	}
	t.Cleanup(func() {
		if err := mount.Unmount(merged); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return merged, upper
}

// TestApplyOverlayWhiteouts applies a second layer through an overlay mount
// of the first: the whiteouts and opaque dirs hide the lower entries, and the
// kernel records them in the upper dir.
func TestApplyOverlayWhiteouts(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	tmp := t.TempDir()
	lower := filepath.Join(tmp, "lower")
	os.Mkdir(lower, 0o755)
	first := layer(t,
		file("a", "a"), dir("d/"), file("d/x", "x"), file("d/y", "y"), dir("gone/"), file("gone/z", "z"),
		dir("o/"), file("o/p", "p"), dir("o/q/"), file("o/q/r", "r"), dir("o/keep/"), file("o/keep/old", "old"),
		dir("o2/"), file("o2/p", "p"),
	)
	if _, err := Apply(context.Background(), lower, bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	merged, upper := overlayOf(t, tmp, lower)
	second := gzipped(t, layer(t,
		file(".wh.a", ""), file("d/.wh.x", ""), file(".wh.gone", ""),
		// the layer's own entries in o come before the opaque marker, in o2 after it
		dir("o/"), file("o/new", "new"), dir("o/keep/"), file("o/keep/mine", "mine"), file("o/.wh..wh..opq", ""),
		file("o2/.wh..wh..opq", ""), file("o2/new", "new"),
		file(".wh.never-there", ""),
	))
	res, err := Apply(context.Background(), merged, bytes.NewReader(second))
	if err != nil {
		t.Fatal(err)
	}
	if res.Whiteouts != 6 {
		t.Errorf("whiteouts %d, want 6", res.Whiteouts)
	}
	got := tree(t, merged)
	want := "" +
		" drwxr-xr-x\n" +
		"/d drwxr-xr-x\n" +
		"/d/y -rw-r--r-- y\n" +
		"/o drwxr-xr-x\n" +
		"/o/keep drwxr-xr-x\n" +
		"/o/keep/mine -rw-r--r-- mine\n" +
		"/o/new -rw-r--r-- new\n" +
		"/o2 drwxr-xr-x\n" +
		"/o2/new -rw-r--r-- new\n"
	if got != want {
		t.Errorf("merged view:\n%s\nwant:\n%s", got, want)
	}
	// The kernel's whiteouts: 0/0 character devices in the upper dir.
	for _, name := range []string{"a", "d/x", "gone", "o/p", "o/q", "o/keep/old", "o2/p"} {
		var s unix.Stat_t
		if err := unix.Lstat(filepath.Join(upper, name), &s); err != nil {
			t.Errorf("upper %s: %v", name, err)
			continue
		}
		if s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != 0 {
			t.Errorf("upper %s: mode %o rdev %d, want a 0/0 whiteout", name, s.Mode, s.Rdev)
		}
	}
	if b, err := os.ReadFile(filepath.Join(lower, "o", "p")); err != nil || string(b) != "p" {
		t.Errorf("lower o/p = %q, %v: the lower layer must stay as it was", b, err)
	}
}
