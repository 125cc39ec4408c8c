package bench

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/fixture"
)

func init() {
	benchSnapshotters = append(benchSnapshotters, benchSnapshotter{name: "btrfs", prepare: loopbackBtrfsAt})
}

// loopbackBtrfsAt mounts a fresh loopback btrfs at root (bound from the
// fixture's own mount point). Unlike the tests' scratch fixture it keeps
// barriers, so commits cost what they would on a disk.
func loopbackBtrfsAt(root string) (undo func(), err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a loopback btrfs needs root")
	}
	dir, err := os.MkdirTemp("", "keel-bench-btrfs-")
	if err != nil {
		return nil, err
	}
	l, err := fixture.NewLoopbackBtrfs(dir, fixture.DefaultLoopbackSize, "")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := unix.Mount(l.Dir, root, "", unix.MS_BIND, ""); err != nil {
		l.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bind %s on %s: %w", l.Dir, root, err)
	}
	return func() {
		unix.Unmount(root, unix.MNT_DETACH)
		l.Close()
		os.RemoveAll(dir)
	}, nil
}
