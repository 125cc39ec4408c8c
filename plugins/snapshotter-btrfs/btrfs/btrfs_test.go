package btrfs_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/plugins/snapshotter-btrfs/btrfs"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

func TestConformance(t *testing.T) {
	dir := fixture.LoopbackBtrfs(t)
	snapshottest.Run(conformance.Go(t), snapshottest.InProcess(btrfs.New, conformance.WithRootDir(dir)),
		conformance.WithRootDir(dir))
}

func open(t *testing.T, root string) snapshot.Snapshotter {
	t.Helper()
	if err := os.MkdirAll(root, 0o700); err != nil { // as sdk.Serve does
		t.Fatal(err)
	}
	s, err := btrfs.New(context.Background(), sdk.Env{Root: root, Config: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRefusesOtherFilesystems: a root that is not on btrfs is refused at
// Configure, naming the root and its filesystem.
func TestRefusesOtherFilesystems(t *testing.T) {
	root := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.BTRFS_SUPER_MAGIC {
		t.Skipf("%s is on btrfs", root)
	}
	_, err := btrfs.New(context.Background(), sdk.Env{Root: root, Config: []byte(`{}`)})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "not btrfs") {
		t.Fatalf("got %v, want FailedPrecondition naming %s and its filesystem", err, root)
	}
	t.Log(err)
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	_, err := btrfs.New(context.Background(), sdk.Env{Root: t.TempDir(), Config: []byte(`{"nope": 1}`)})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}

// subvolumeRO reports whether path is a subvolume root, and read-only.
func subvolume(t *testing.T, path string) (isSubvol, readOnly bool) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		t.Fatal(err)
	}
	// A read-only subvolume refuses a new entry with EROFS.
	err := os.Mkdir(filepath.Join(path, ".probe"), 0o700)
	if err == nil {
		os.Remove(filepath.Join(path, ".probe"))
	}
	return st.Ino == 256 && fs.Type == unix.BTRFS_SUPER_MAGIC, err != nil && strings.Contains(err.Error(), "read-only")
}

// TestSubvolumes checks the layout: every snapshot a subvolume, committed
// and view read-only, active writable, the writable one gone after commit,
// and Remove deleting the subvolume.
func TestSubvolumes(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(fixture.LoopbackBtrfs(t), "root")
	s := open(t, root)
	ms, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	active := ms[0].Source
	if ok, ro := subvolume(t, active); !ok || ro {
		t.Fatalf("active %s: subvolume %v, read-only %v; want a writable subvolume", active, ok, ro)
	}
	if err := os.WriteFile(filepath.Join(active, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(active); !os.IsNotExist(err) {
		t.Errorf("writable subvolume %s left after commit: %v", active, err)
	}
	committed := filepath.Join(root, "committed", filepath.Base(active))
	if ok, ro := subvolume(t, committed); !ok || !ro {
		t.Errorf("committed %s: subvolume %v, read-only %v; want a read-only subvolume", committed, ok, ro)
	}
	vms, err := s.View(ctx, "v", "base")
	if err != nil {
		t.Fatal(err)
	}
	if ok, ro := subvolume(t, vms[0].Source); !ok || !ro {
		t.Errorf("view: subvolume %v, read-only %v", ok, ro)
	}
	if b, err := os.ReadFile(filepath.Join(vms[0].Source, "f")); err != nil || string(b) != "data" {
		t.Errorf("view's f = %q, %v", b, err)
	}
	cms, err := s.Prepare(ctx, "c", "base")
	if err != nil {
		t.Fatal(err)
	}
	if ok, ro := subvolume(t, cms[0].Source); !ok || ro {
		t.Errorf("child: subvolume %v, read-only %v", ok, ro)
	}
	for _, k := range []string{"v", "c", "base"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{vms[0].Source, cms[0].Source, committed} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after remove: %v", p, err)
		}
	}
}

// TestRemoveNestedSubvolume: a subvolume made inside a snapshot (by what
// ran in it) does not stop Remove.
func TestRemoveNestedSubvolume(t *testing.T) {
	btrfsCLI := requireBtrfsCLI(t)
	ctx := context.Background()
	s := open(t, filepath.Join(fixture.LoopbackBtrfs(t), "root"))
	ms, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(ms[0].Source, "dir", "nested")
	os.MkdirAll(filepath.Dir(nested), 0o755)
	if out, err := exec.Command(btrfsCLI, "subvolume", "create", nested).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := s.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ms[0].Source); !os.IsNotExist(err) {
		t.Errorf("%s after remove: %v", ms[0].Source, err)
	}
}

func requireBtrfsCLI(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("btrfs")
	if err != nil {
		t.Skipf("needs the btrfs command (btrfs-progs) to set the test up: %v", err)
	}
	return p
}

// TestUsageQgroup: with quotas on, a snapshot's size is its own data (the
// qgroup's exclusive bytes), so an untouched child of a 4 MiB parent
// weighs next to nothing, and the parent its 4 MiB.
func TestUsageQgroup(t *testing.T) {
	btrfsCLI := requireBtrfsCLI(t)
	ctx := context.Background()
	mnt := fixture.LoopbackBtrfs(t)
	if out, err := exec.Command(btrfsCLI, "quota", "enable", mnt).CombinedOutput(); err != nil {
		t.Fatalf("quota enable: %v: %s", err, out)
	}
	s := open(t, filepath.Join(mnt, "root"))
	ms, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := mount.All(ms, target); err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	err = os.WriteFile(filepath.Join(target, "f"), []byte(strings.Repeat("x", size)), 0o644)
	mount.Unmount(target)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.Usage(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if u.Size < size || u.Size > size+1<<20 || u.Inodes != 2 {
		t.Errorf("usage of a with a 4 MiB file = %+v", u)
	}
	if err := s.Commit(ctx, "base", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "child", "base"); err != nil {
		t.Fatal(err)
	}
	c, err := s.Usage(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	// A walk would say 4 MiB: the child sees the parent's file.
	if c.Size >= 1<<20 || c.Inodes != u.Inodes {
		t.Errorf("usage of an untouched child = %+v, want its own bytes only (parent: %+v)", c, u)
	}
}
