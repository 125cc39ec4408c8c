package sweep

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/testkit"
)

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	mkdirs(t, dir)
	if err := unix.Mount("none", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for unix.Unmount(dir, unix.MNT_DETACH) == nil {
		}
	})
}

func TestEscape(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a*b?[c]")
	mkdirs(t, filepath.Join(dir, "tmp-1"), filepath.Join(t.TempDir(), "axb"))
	found, err := Find([]string{Escape(dir) + "/tmp-*"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Leftover{{KindDir, filepath.Join(dir, "tmp-1")}}; !slices.Equal(found, want) {
		t.Errorf("found %v, want %v", found, want)
	}
}

func TestFindAndRemove(t *testing.T) {
	testkit.RequireRoot(t, "mount")
	dir := t.TempDir()
	p := func(s string) string { return filepath.Join(dir, s) }
	// Two mounts stacked on one stale path, one under another, a file, and
	// what no pattern names or keep spares.
	mountTmpfs(t, p("pull/1/layer-a"))
	mountTmpfs(t, p("pull/1/layer-a"))
	mountTmpfs(t, p("pull/2"))
	mkdirs(t, p("pull/2/layer-b"))
	mountTmpfs(t, p("pull/2/layer-b"))
	if err := os.WriteFile(p("pull/stray"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, p("other/mnt"))
	mountTmpfs(t, p("pull/mine/layer-c"))
	keep := func(path string) bool { return path == p("pull/mine") }

	found, err := Find([]string{dir + "/pull/*"}, keep)
	if err != nil {
		t.Fatal(err)
	}
	want := []Leftover{
		{KindMount, p("pull/1/layer-a")},
		{KindMount, p("pull/2/layer-b")},
		{KindMount, p("pull/2")},
		{KindDir, p("pull/1")},
		{KindDir, p("pull/2")},
		{KindFile, p("pull/stray")},
	}
	if !slices.Equal(found, want) {
		t.Fatalf("found\n%v\nwant\n%v", found, want)
	}
	// A dir with a mount under it is not removed.
	if err := Remove(Leftover{KindDir, p("pull/1")}); err == nil {
		t.Fatal("removed a dir with a mount under it")
	}
	removed, err := Sweep([]string{dir + "/pull/*"}, keep)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if left, _ := Find([]string{dir + "/pull/*"}, keep); len(left) != 0 {
		t.Errorf("left after the sweep: %v", left)
	}
	for _, m := range []string{p("other/mnt"), p("pull/mine/layer-c")} {
		if found, _ := Find([]string{Escape(m)}, nil); len(found) != 2 || found[0].Kind != KindMount {
			t.Errorf("%s was touched: %v", m, found)
		}
	}
}
