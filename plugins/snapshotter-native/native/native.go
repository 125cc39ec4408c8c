// Package native is a copy-based snapshotter: every active snapshot and
// view is a full copy of its parent's tree, handed out as a bind mount. It
// needs no kernel feature beyond bind mounts and works on any filesystem,
// at the cost of disk space and time per snapshot. The metadata, lifecycle
// and error classes come from sdk/snapshot/backend; this package is the
// filesystem side.
//
// Layout under the plugin's root:
//
//	metadata.db        sdk/snapshot/storage metastore
//	snapshots/<id>/    the tree of the snapshot with that id; flagged
//	                   top-dir where the filesystem has it (see markTopDir)
//
// Versions before backend made copies in a tmp/ dir beside snapshots/,
// which New sweeps away; their metadata.db and snapshots/ are this
// version's.
package native

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/continuity/fs"
	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
	"github.com/keel-runtime/keel/sdk/snapshot/storage"
	"github.com/keel-runtime/keel/sdk/sweep"
)

// Config is the plugin's config block. It has no keys yet.
type Config struct{}

// copies is the backend: the tree of snapshot id in <copies>/<id>.
type copies string

// Interface guards.
var (
	_ backend.Backend = copies("")
	_ backend.Lister  = copies("")
)

// New opens the native snapshotter on env.Root.
func New(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	var cfg Config
	if err := env.DecodeConfig(&cfg); err != nil {
		return nil, err
	}
	logger := env.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c := copies(filepath.Join(env.Root, "snapshots"))
	if err := os.MkdirAll(string(c), 0o700); err != nil {
		return nil, err
	}
	if err := markTopDir(string(c)); err != nil {
		logger.Debug("copies are made without the top-dir flag", "error", err)
	}
	// The staging dir of versions before backend: only copies being made
	// and trees being removed.
	if removed, err := sweep.Sweep([]string{filepath.Join(sweep.Escape(filepath.Clean(env.Root)), "tmp")}, nil); err != nil {
		logger.Warn("removing the tmp/ dir an older version left", "error", err)
	} else if len(removed) > 0 {
		logger.Info("removed the tmp/ dir an older version left", "removed", len(removed))
	}
	store, err := storage.Open(filepath.Join(env.Root, "metadata.db"))
	if err != nil {
		return nil, err
	}
	s, err := backend.New(ctx, store, c)
	if err != nil {
		return nil, err
	}
	if err := c.repair(ctx, store, logger); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// repair remakes the tree of an active snapshot or view that has a record
// but no tree (a crash inside Prepare in versions before backend, which
// recorded the snapshot before moving its copy into place): its mounts
// were never handed out, so a fresh copy of its parent is its tree. A
// committed snapshot without its tree is data lost, and refused.
func (c copies) repair(ctx context.Context, store *storage.Store, logger hclog.Logger) error {
	type missing struct {
		key string
		sn  storage.Snapshot
	}
	var todo []missing
	err := store.View(ctx, func(tx *storage.Tx) error {
		ids, err := tx.IDs()
		if err != nil {
			return err
		}
		for id, key := range ids {
			if _, err := os.Lstat(c.dir(id)); !os.IsNotExist(err) {
				continue
			}
			sn, err := tx.Get(key)
			if err != nil {
				return err
			}
			if sn.Kind == snapshot.KindCommitted {
				return fmt.Errorf("committed snapshot %q has no tree at %s: %w", key, c.dir(id), errdefs.ErrDataLoss)
			}
			todo = append(todo, missing{key, sn})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range todo {
		// Copied aside and renamed into place, so a crash here leaves no
		// half tree: what it leaves is a dir no id owns, for Cleanup.
		aside := m.sn.ID + ".rebuild"
		err := os.RemoveAll(c.dir(aside))
		if err == nil {
			err = c.Create(ctx, aside, m.sn.Kind, m.sn.ParentIDs)
		}
		if err == nil {
			err = os.Rename(c.dir(aside), c.dir(m.sn.ID))
		}
		if err != nil {
			os.RemoveAll(c.dir(aside))
			return fmt.Errorf("rebuild snapshot %q: %w", m.key, err)
		}
		logger.Warn("rebuilt the tree of a snapshot interrupted at creation", "key", m.key)
	}
	return nil
}

func (c copies) dir(id string) string { return filepath.Join(string(c), id) }

// Create makes the tree of id: a copy of its parent's (modes, owners,
// times, xattrs, hardlinks, symlinks, device nodes, fifos and sparse
// files kept), or an empty dir.
func (c copies) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	if len(parentIDs) > 0 {
		return fs.CopyDir(c.dir(id), c.dir(parentIDs[0]))
	}
	if err := os.Mkdir(c.dir(id), 0o755); err != nil {
		return err
	}
	return os.Chmod(c.dir(id), 0o755) // whatever the umask
}

// Mounts bind the tree, read-only for a view.
func (c copies) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	mode := "rw"
	if kind == snapshot.KindView {
		mode = "ro"
	}
	return []mount.Mount{{Type: "bind", Source: c.dir(id), Options: []string{"rbind", mode}}}
}

// Commit syncs the tree's filesystem, so a committed snapshot survives a
// crash whole.
func (c copies) Commit(ctx context.Context, id string) error { return backend.SyncFS(c.dir(id)) }

// Remove deletes the tree.
func (c copies) Remove(ctx context.Context, id string) error { return os.RemoveAll(c.dir(id)) }

// Usage is the disk use of the tree, hardlinks counted once.
func (c copies) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return backend.DirUsage(ctx, c.dir(id))
}

// List makes the snapshotter a snapshot.Cleaner: Cleanup removes the trees
// of ids no snapshot owns.
func (c copies) List(ctx context.Context) ([]string, error) { return backend.ListDir(string(c)) }
