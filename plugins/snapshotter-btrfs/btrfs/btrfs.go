// Package btrfs is keel's btrfs snapshotter: every snapshot is a btrfs
// subvolume. Prepare and View snapshot the parent's subvolume (writable,
// or read-only for a view), Commit takes a read-only snapshot of the
// active one and drops the writable one, Remove deletes the subvolume. No
// data is ever copied: btrfs shares extents between a snapshot and its
// source.
//
// Layout under the plugin's root, which must be on btrfs:
//
//	metadata.db       snapshot records (sdk/snapshot/storage, bbolt)
//	active/<id>       subvolume of an active snapshot or a view
//	committed/<id>    read-only subvolume of a committed snapshot
package btrfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

// Config is the plugin's `config {}` block. It has no keys yet.
type Config struct{}

// New checks that env.Root is on btrfs and opens the snapshotter on it.
func New(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	var cfg Config
	if err := env.DecodeConfig(&cfg); err != nil {
		return nil, err
	}
	if err := checkBtrfs(env.Root); err != nil {
		return nil, err
	}
	b := subvolumes{root: env.Root}
	for _, dir := range []string{b.activeDir(), b.committedDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	return backend.Open(ctx, filepath.Join(env.Root, "metadata.db"), b)
}

// checkBtrfs refuses a root that is not on btrfs, naming its filesystem.
func checkBtrfs(root string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return fmt.Errorf("btrfs snapshotter: root %s: %w", root, err)
	}
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		return fmt.Errorf("btrfs snapshotter: root %s is on %s, not btrfs: give the plugin a root on a btrfs filesystem: %w",
			root, fsName(st.Type), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// fsName names the filesystems a root is most likely to be on.
func fsName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case 0x2fc12fc1:
		return "zfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	}
	return fmt.Sprintf("a filesystem with magic %#x", magic)
}

// subvolumes is the backend: a subvolume per snapshot id.
type subvolumes struct{ root string }

var (
	_ backend.Backend        = subvolumes{}
	_ backend.Lister         = subvolumes{}
	_ backend.CommitFinisher = subvolumes{}
	_ backend.KindUsager     = subvolumes{}
)

func (b subvolumes) activeDir() string    { return filepath.Join(b.root, "active") }
func (b subvolumes) committedDir() string { return filepath.Join(b.root, "committed") }
func (b subvolumes) active(id string) string {
	return filepath.Join(b.activeDir(), id)
}
func (b subvolumes) committed(id string) string {
	return filepath.Join(b.committedDir(), id)
}

// Create makes active/<id>: a snapshot of the parent's committed
// subvolume, or an empty subvolume; read-only for a view.
func (b subvolumes) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	readOnly := kind == snapshot.KindView
	if len(parentIDs) > 0 {
		return snapshotSubvolume(b.active(id), b.committed(parentIDs[0]), readOnly)
	}
	if err := createSubvolume(b.active(id)); err != nil {
		return err
	}
	if readOnly {
		return setReadOnly(b.active(id))
	}
	return nil
}

// Mounts bind the subvolume's directory: a bind needs no device (a loop
// device or a multi-device filesystem has no one path to name), works in
// any mount namespace that sees the root, and is what sdk/mount and runc
// mount as they are.
func (b subvolumes) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	mode := "rw"
	if kind == snapshot.KindView {
		mode = "ro"
	}
	return []mount.Mount{{Type: "bind", Source: b.active(id), Options: []string{"rbind", mode}}}
}

// Commit makes committed/<id>, a read-only snapshot of active/<id>. The
// kernel flushes the data and commits a transaction to make a snapshot, so
// it is durable on return. active/<id> stays, so the snapshot is still
// usable as active should recording the commit fail; FinishCommit drops it.
func (b subvolumes) Commit(ctx context.Context, id string) error {
	// A commit tried before whose record failed left one behind.
	if err := deleteSubvolume(b.committed(id)); err != nil {
		return err
	}
	return snapshotSubvolume(b.committed(id), b.active(id), true)
}

// FinishCommit deletes the writable subvolume of the now committed id.
func (b subvolumes) FinishCommit(ctx context.Context, id string) error {
	return deleteSubvolume(b.active(id))
}

// Remove deletes both subvolumes id may have.
func (b subvolumes) Remove(ctx context.Context, id string) error {
	return errors.Join(deleteSubvolume(b.active(id)), deleteSubvolume(b.committed(id)))
}

// Usage of id, whichever subvolume it has (UsageOf is what the
// snapshotter calls).
func (b subvolumes) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	kind := snapshot.KindCommitted
	if _, err := os.Lstat(b.committed(id)); errors.Is(err, fs.ErrNotExist) {
		kind = snapshot.KindActive
	}
	return b.UsageOf(ctx, id, kind)
}

// UsageOf walks the subvolume for its inodes and size. With quotas enabled
// on the filesystem, the size is the subvolume's qgroup exclusive bytes
// instead: its own data, not what it shares with its parent (a walk cannot
// tell shared extents apart).
func (b subvolumes) UsageOf(ctx context.Context, id string, kind snapshot.Kind) (snapshot.Usage, error) {
	path := b.active(id)
	if kind == snapshot.KindCommitted {
		path = b.committed(id)
	}
	u, err := backend.DirUsage(ctx, path)
	if err != nil {
		return snapshot.Usage{}, err
	}
	excl, err := exclusiveBytes(path)
	if err == nil && kind != snapshot.KindCommitted {
		// qgroup figures are brought up to date by a transaction commit.
		if err := backend.SyncFS(path); err != nil {
			return snapshot.Usage{}, err
		}
		excl, err = exclusiveBytes(path)
	}
	switch {
	case err == nil:
		u.Size = excl
	case !errors.Is(err, errNoQuota):
		return snapshot.Usage{}, err
	}
	return u, nil
}

// List returns the ids that have a subvolume, for Cleanup.
func (b subvolumes) List(ctx context.Context) ([]string, error) {
	active, err := backend.ListDir(b.activeDir())
	if err != nil {
		return nil, err
	}
	committed, err := backend.ListDir(b.committedDir())
	if err != nil {
		return nil, err
	}
	ids := append(active, committed...)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}
