// Package native is a copy-based snapshotter: every active snapshot and
// view is a full copy of its parent's tree, handed out as a bind mount. It
// needs no kernel feature beyond bind mounts and works on any filesystem,
// at the cost of disk space and time per snapshot.
//
// Layout under the plugin's root:
//
//	metadata.db        sdk/snapshot/storage metastore
//	snapshots/<id>/    the tree of the snapshot with that id
//	tmp/               copies being made and trees being removed; anything
//	                   here after a crash is removed at start and by Cleanup; flagged
//	                   top-dir where the filesystem has it (see markTopDir)
package native

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/continuity/fs"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/storage"
	"github.com/keel-runtime/keel/sdk/sweep"
)

// Config is the plugin's config block. It has no keys yet.
type Config struct{}

// Snapshotter is the native snapshotter.
type Snapshotter struct {
	root   string
	store  *storage.Store
	logger hclog.Logger

	// staging is held shared by operations that own a directory under tmp/
	// or a snapshot directory not yet recorded, and exclusively by Cleanup,
	// so Cleanup never takes a tree that is being made.
	staging sync.RWMutex
}

// Interface guards.
var (
	_ snapshot.Snapshotter = (*Snapshotter)(nil)
	_ snapshot.Cleaner     = (*Snapshotter)(nil)
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
	for _, dir := range []string{"snapshots", "tmp"} {
		if err := os.MkdirAll(filepath.Join(env.Root, dir), 0o700); err != nil {
			return nil, err
		}
	}
	// Copies a killed plugin was making: nothing uses them before New returns.
	if removed, err := sweep.Sweep([]string{filepath.Join(sweep.Escape(filepath.Clean(env.Root)), "tmp", "*")}, nil); err != nil {
		logger.Warn("removing what a killed plugin left in tmp/", "error", err)
	} else if len(removed) > 0 {
		logger.Info("removed what a killed plugin left in tmp/", "removed", len(removed))
	}
	if err := markTopDir(filepath.Join(env.Root, "tmp")); err != nil {
		logger.Debug("copies are made without the top-dir flag", "error", err)
	}
	store, err := storage.Open(filepath.Join(env.Root, "metadata.db"))
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{root: env.Root, store: store, logger: logger}
	if err := s.repair(ctx); err != nil {
		store.Close()
		return nil, err
	}
	return s, nil
}

// repair rebuilds the tree of an active snapshot or view whose record was
// made but whose copy never moved into place (a crash inside Prepare): its
// mounts were never handed out, so a fresh copy of its parent is its tree.
func (s *Snapshotter) repair(ctx context.Context) error {
	type missing struct{ key, id, parentID string }
	var todo []missing
	err := s.store.View(ctx, func(tx *storage.Tx) error {
		ids, err := tx.IDs()
		if err != nil {
			return err
		}
		for id, key := range ids {
			if _, err := os.Lstat(s.dir(id)); !os.IsNotExist(err) {
				continue
			}
			sn, err := tx.Get(key)
			if err != nil {
				return err
			}
			if sn.Kind == snapshot.KindCommitted {
				return fmt.Errorf("committed snapshot %q has no tree at %s: %w", key, s.dir(id), errdefs.ErrDataLoss)
			}
			m := missing{key: key, id: id}
			if len(sn.ParentIDs) > 0 {
				m.parentID = sn.ParentIDs[0]
			}
			todo = append(todo, m)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range todo {
		td, err := os.MkdirTemp(s.tmp(), "new-")
		if err != nil {
			return err
		}
		if m.parentID != "" {
			err = fs.CopyDir(td, s.dir(m.parentID))
		} else {
			err = os.Chmod(td, 0o755)
		}
		if err == nil {
			err = os.Rename(td, s.dir(m.id))
		}
		if err != nil {
			os.RemoveAll(td)
			return fmt.Errorf("rebuild snapshot %q: %w", m.key, err)
		}
		s.logger.Warn("rebuilt the tree of a snapshot interrupted at creation", "key", m.key)
	}
	return nil
}

func (s *Snapshotter) dir(id string) string { return filepath.Join(s.root, "snapshots", id) }
func (s *Snapshotter) tmp() string          { return filepath.Join(s.root, "tmp") }

// Stat returns the info of the snapshot key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshot.Info, err error) {
	err = s.store.View(ctx, func(tx *storage.Tx) error {
		info, err = tx.Info(key)
		return err
	})
	return info, err
}

// Update changes the labels of a snapshot.
func (s *Snapshotter) Update(ctx context.Context, info snapshot.Info, fieldpaths ...string) (out snapshot.Info, err error) {
	err = s.store.Update(ctx, func(tx *storage.Tx) error {
		out, err = tx.UpdateInfo(info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage is the disk use of the snapshot's own tree, hardlinks counted once.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshot.Usage, error) {
	var sn storage.Snapshot
	err := s.store.View(ctx, func(tx *storage.Tx) (err error) {
		sn, err = tx.Get(key)
		return err
	})
	if err != nil {
		return snapshot.Usage{}, err
	}
	du, err := fs.DiskUsage(ctx, s.dir(sn.ID))
	if err != nil {
		return snapshot.Usage{}, fmt.Errorf("usage of %q: %w", key, err)
	}
	return snapshot.Usage{Size: du.Size, Inodes: du.Inodes}, nil
}

// Mounts of an active snapshot or a view.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var sn storage.Snapshot
	err := s.store.View(ctx, func(tx *storage.Tx) (err error) {
		sn, err = tx.Get(key)
		return err
	})
	if err != nil {
		return nil, err
	}
	if sn.Kind == snapshot.KindCommitted {
		return nil, fmt.Errorf("mounts of %q: snapshot is committed: %w", key, errdefs.ErrFailedPrecondition)
	}
	return s.mounts(sn), nil
}

func (s *Snapshotter) mounts(sn storage.Snapshot) []mount.Mount {
	mode := "rw"
	if sn.Kind == snapshot.KindView {
		mode = "ro"
	}
	return []mount.Mount{{Type: "bind", Source: s.dir(sn.ID), Options: []string{"rbind", mode}}}
}

// Prepare makes an active snapshot holding a copy of parent's tree.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshot.KindActive, key, parent, opts)
}

// View makes a read-only snapshot holding a copy of parent's tree.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshot.KindView, key, parent, opts)
}

// create copies parent's tree into tmp/ outside any transaction, then
// records the snapshot and moves the copy into place in one transaction,
// so a crash leaves either both or an orphan copy for Cleanup.
func (s *Snapshotter) create(ctx context.Context, kind snapshot.Kind, key, parent string, opts []snapshot.Opt) ([]mount.Mount, error) {
	s.staging.RLock()
	defer s.staging.RUnlock()

	// Fail early, before copying, on what the metastore will refuse anyway.
	var parentID string
	err := s.store.View(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Info(key); err == nil {
			return fmt.Errorf("snapshot %q: %w", key, errdefs.ErrAlreadyExists)
		} else if !errdefs.IsNotFound(err) {
			return err
		}
		if parent == "" {
			return nil
		}
		p, err := tx.Get(parent)
		if err != nil {
			return fmt.Errorf("snapshot %q: parent: %w", key, err)
		}
		if p.Kind != snapshot.KindCommitted {
			return fmt.Errorf("snapshot %q: parent %q is %s, not committed: %w", key, parent, p.Kind, errdefs.ErrFailedPrecondition)
		}
		parentID = p.ID
		return nil
	})
	if err != nil {
		return nil, err
	}

	td, err := os.MkdirTemp(s.tmp(), "new-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(td) // gone by now when all went well
	if parentID != "" {
		if err := fs.CopyDir(td, s.dir(parentID)); err != nil {
			return nil, fmt.Errorf("snapshot %q: copy parent %q: %w", key, parent, err)
		}
	} else if err := os.Chmod(td, 0o755); err != nil {
		return nil, err
	}

	// The record is made in a shared batch (one disk sync for many calls);
	// the copy moves into place after. A crash in between leaves a record
	// without a tree, which New rebuilds: nobody has seen its mounts yet.
	var sn storage.Snapshot
	err = s.store.Batch(ctx, func(tx *storage.Tx) (err error) {
		sn, err = tx.Create(kind, key, parent, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := os.Rename(td, s.dir(sn.ID)); err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	return s.mounts(sn), nil
}

// Commit makes the active snapshot key the committed snapshot name. The
// tree's filesystem is synced first, so a committed snapshot survives a
// crash whole.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	var sn storage.Snapshot
	err := s.store.View(ctx, func(tx *storage.Tx) (err error) {
		sn, err = tx.Get(key)
		return err
	})
	if err != nil {
		return err
	}
	if sn.Kind != snapshot.KindActive {
		return fmt.Errorf("commit of %q: snapshot is %s, not active: %w", key, sn.Kind, errdefs.ErrFailedPrecondition)
	}
	if err := syncfs(s.dir(sn.ID)); err != nil {
		return fmt.Errorf("commit of %q: %w", key, err)
	}
	return s.store.Batch(ctx, func(tx *storage.Tx) error {
		_, err := tx.Commit(key, name, opts...)
		return err
	})
}

// Remove deletes a snapshot with no children: the record first, then its
// tree, which Cleanup removes should a crash come in between.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	s.staging.RLock()
	defer s.staging.RUnlock()
	var id string
	err := s.store.Batch(ctx, func(tx *storage.Tx) (err error) {
		id, _, err = tx.Remove(key)
		return err
	})
	if err != nil {
		return err
	}
	trash := filepath.Join(s.tmp(), "rm-"+id)
	if err := os.Rename(s.dir(id), trash); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		trash = s.dir(id)
	}
	if err := os.RemoveAll(trash); err != nil {
		// The record is gone; Cleanup takes what is left.
		s.logger.Warn("removing snapshot tree failed", "key", key, "error", err)
	}
	return nil
}

// Walk calls fn for each snapshot matching filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshot.WalkFunc, filters ...string) error {
	return s.store.View(ctx, func(tx *storage.Tx) error {
		return tx.Walk(func(info snapshot.Info) error { return fn(ctx, info) }, filters...)
	})
}

// Cleanup removes trees no snapshot owns: orphans of crashed operations and
// anything left in tmp/.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	s.staging.Lock()
	defer s.staging.Unlock()
	var ids map[string]string
	err := s.store.View(ctx, func(tx *storage.Tx) (err error) {
		ids, err = tx.IDs()
		return err
	})
	if err != nil {
		return err
	}
	var doomed []string
	entries, err := os.ReadDir(filepath.Join(s.root, "snapshots"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := ids[e.Name()]; !ok {
			doomed = append(doomed, s.dir(e.Name()))
		}
	}
	entries, err = os.ReadDir(s.tmp())
	if err != nil {
		return err
	}
	for _, e := range entries {
		doomed = append(doomed, filepath.Join(s.tmp(), e.Name()))
	}
	for _, d := range doomed {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		s.logger.Debug("removed orphan tree", "path", d)
	}
	return nil
}

// Close closes the metastore.
func (s *Snapshotter) Close() error { return s.store.Close() }

// syncfs flushes the filesystem holding dir to disk.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
