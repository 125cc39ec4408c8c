package native

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
)

// TestSnapshotsIsTopDir checks New flags snapshots/ top-dir where the filesystem
// takes the flag (ext4 does; tmpfs, btrfs and xfs refuse it).
func TestSnapshotsIsTopDir(t *testing.T) {
	root := t.TempDir()
	if err := markTopDir(root); err != nil {
		t.Skipf("the filesystem of %s has no top-dir flag: %v", root, err)
	}
	s, err := New(context.Background(), sdk.Env{Root: root, Config: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.Open(filepath.Join(root, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	if flags&fsTopdirFL == 0 {
		t.Fatalf("snapshots/ flags %#x lack top-dir", flags)
	}
	// A second open finds the flag set and leaves it.
	if err := markTopDir(filepath.Join(root, "snapshots")); err != nil {
		t.Fatal(err)
	}
}
