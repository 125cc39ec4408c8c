// Package backend turns the filesystem half of a snapshotter into a whole
// one. A plugin author writes a Backend — how to make, mount, sync, remove
// and measure the data of one snapshot, named by an id — and New adds
// everything else: the metadata in a storage.Store, the lifecycle (active,
// committed, view), the error classes of sdk/snapshot, labels, Walk with
// filters, and Cleanup when the backend can list what it holds.
//
//	store, err := storage.Open(filepath.Join(env.Root, "metadata.db"))
//	if err != nil {
//		return nil, err
//	}
//	return backend.New(ctx, store, myBackend{dir: env.Root})
//
// or, the same in one call, backend.Open(ctx, path, b). The package's
// example is a whole overlay-style Backend.
//
// # Ids
//
// Each snapshot has an id the store hands out and never reuses; a
// committed snapshot keeps the id it had while active. The backend keys
// all its data by id and never sees snapshot keys. Calls carry the parent
// chain as ids, nearest parent first: a copy makes parentIDs[0]'s copy,
// overlay stacks them as lowerdirs in that order, btrfs snapshots
// parentIDs[0].
//
// # Ordering
//
// No caller ever sees a half-made snapshot, and a crash leaves at most
// data no snapshot owns, which Cleanup removes:
//
//   - Prepare and View check the key and the parent, take an id from
//     storage.Store.NewID, have Backend.Create make the data outside any
//     transaction, and then record the snapshot: one write transaction.
//     Until then the key is taken and the parent pinned in memory
//     (storage.InFlight): a Prepare of the same key is AlreadyExists, a
//     Remove of the parent FailedPrecondition. When Create or the record
//     fails, Remove(id) undoes the data. A crash in between leaves data
//     under an id no record holds, which New removes
//     (storage.Store.UnclaimedIDs). Snapshots an older version left marked
//     pending (the reserved label LabelPending) are hidden and undone by
//     New too.
//   - Commit calls Backend.Commit (make the data durable), then records the
//     commit. Should the record fail, the snapshot stays active, so
//     Backend.Commit must leave it usable as such. A CommitFinisher then
//     drops what only the active snapshot needed (btrfs: the writable
//     subvolume Commit took a read-only snapshot of).
//   - Remove deletes the record first, then calls Backend.Remove; if that
//     fails or a crash comes in between, the data is an orphan.
//
// Backend calls for different ids run concurrently.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"sync"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/storage"
)

// Backend keeps the data of snapshots, by id.
type Backend interface {
	// Create makes the data of the new snapshot id of kind (active or
	// view) on the parent chain parentIDs, nearest first (none: empty).
	// On error, Remove(id) is called to take away what Create left.
	Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error
	// Mounts are what a caller mounts to use the active snapshot or view
	// id. It is called often and should only compute.
	Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount
	// Commit makes the data of the active snapshot id durable: it is about
	// to become a committed snapshot, a parent for others.
	Commit(ctx context.Context, id string) error
	// Remove deletes the data of id. An id that holds nothing (never made,
	// or already removed) is no error.
	Remove(ctx context.Context, id string) error
	// Usage is the disk use of id's own data, not its parents'.
	Usage(ctx context.Context, id string) (snapshot.Usage, error)
}

// Lister is a Backend that can list the ids it holds data for. With it,
// the snapshotter New returns is a snapshot.Cleaner: Cleanup removes the
// data of every listed id that no snapshot owns.
type Lister interface {
	List(ctx context.Context) ([]string, error)
}

// KindUsager is a Backend whose usage depends on the snapshot's kind, e.g.
// to cache that of committed snapshots, whose data never changes. The
// snapshotter calls UsageOf instead of Usage.
type KindUsager interface {
	UsageOf(ctx context.Context, id string, kind snapshot.Kind) (snapshot.Usage, error)
}

// CommitFinisher is a Backend with work left once a commit is recorded,
// such as deleting the writable data Backend.Commit had to keep. The
// snapshot is committed whatever FinishCommit returns; what an error
// leaves stays until the snapshot is removed (Remove must take it too).
type CommitFinisher interface {
	FinishCommit(ctx context.Context, id string) error
}

// Labeler is a Backend that labels its snapshots, e.g. with where their
// data is, for tooling. Labels(id, kind) is merged into the snapshot's
// labels when it becomes visible (after Create) and when it is committed
// (a commit sets its labels anew); the caller's labels win on a clash. It
// should only compute.
type Labeler interface {
	Labels(id string, kind snapshot.Kind) map[string]string
}

// A Backend may also be a snapshot.Cleaner, to remove what it holds outside
// any id (staging areas, trash); the snapshotter's Cleanup calls it after
// removing orphans, while no other Backend call that changes data runs.
// A Backend that is an io.Closer is closed with the snapshotter.

// LabelPending is the reserved label that marks a snapshot being made.
// Callers may not set it.
const LabelPending = "io.keel/snapshot.pending"

// New returns a snapshotter keeping its metadata in store and its data in
// b. It owns store from the call on (closed by Close, or at once when New
// fails). It undoes snapshots a crash left pending before it returns. The
// result is a snapshot.Cleaner when b is a Lister or a snapshot.Cleaner.
func New(ctx context.Context, store *storage.Store, b Backend) (snapshot.Snapshotter, error) {
	s := &Snapshotter{store: store, b: b}
	if err := s.undoPending(ctx); err != nil {
		store.Close()
		return nil, err
	}
	if err := s.removeUnclaimed(ctx); err != nil {
		store.Close()
		return nil, err
	}
	_, lists := b.(Lister)
	_, cleans := b.(snapshot.Cleaner)
	if lists || cleans {
		return &cleaner{s}, nil
	}
	return s, nil
}

// Open opens (creating it when missing) the metastore at path, e.g.
// <root>/metadata.db, and returns New's snapshotter on it.
func Open(ctx context.Context, path string, b Backend) (snapshot.Snapshotter, error) {
	store, err := storage.Open(path)
	if err != nil {
		return nil, err
	}
	return New(ctx, store, b)
}

// Snapshotter is a snapshotter made of a metastore and a Backend.
type Snapshotter struct {
	store *storage.Store
	b     Backend

	// changing is held shared by calls that change backend data and
	// exclusively by Cleanup, which so never takes data being made or
	// removed.
	changing sync.RWMutex
	// inflight holds the parents of snapshots being made, which Remove
	// refuses, and their keys.
	inflight storage.InFlight
}

// cleaner is a Snapshotter whose backend can clean up.
type cleaner struct{ *Snapshotter }

// Interface guards.
var (
	_ snapshot.Snapshotter = (*Snapshotter)(nil)
	_ snapshot.Snapshotter = (*cleaner)(nil)
	_ snapshot.Cleaner     = (*cleaner)(nil)
)

// undoPending removes the snapshots a crash left half made: their data
// first, then their records.
func (s *Snapshotter) undoPending(ctx context.Context) error {
	var pending []string
	err := s.store.View(ctx, func(tx *storage.Tx) error {
		return tx.Walk(func(info snapshot.Info) error {
			pending = append(pending, info.Name)
			return nil
		}, pendingFilter)
	})
	if err != nil {
		return err
	}
	for _, key := range pending {
		if err := s.undoCreate(ctx, key); err != nil {
			return err
		}
	}
	return nil
}

// removeUnclaimed removes the data of ids handed out to snapshots a crash
// stopped before they were recorded (see storage.Store.UnclaimedIDs).
func (s *Snapshotter) removeUnclaimed(ctx context.Context) error {
	ids, err := s.store.UnclaimedIDs(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.b.Remove(ctx, id); err != nil {
			return fmt.Errorf("removing the data of unrecorded snapshot id %s: %w", id, err)
		}
	}
	return nil
}

// pendingFilter matches pending snapshots.
var pendingFilter = `labels."` + LabelPending + `"`

// undoCreate removes the data, then the record, of the pending snapshot key.
func (s *Snapshotter) undoCreate(ctx context.Context, key string) error {
	ctx = context.WithoutCancel(ctx) // an undo must not stop halfway
	var sn storage.Snapshot
	err := s.store.View(ctx, func(tx *storage.Tx) (err error) {
		sn, err = tx.Get(key)
		return err
	})
	if err != nil {
		return err
	}
	if err := s.b.Remove(ctx, sn.ID); err != nil {
		return fmt.Errorf("snapshot %q: undo interrupted creation: %w", key, err)
	}
	return s.store.Batch(ctx, func(tx *storage.Tx) error {
		_, _, err := tx.Remove(key)
		return err
	})
}

// get returns the visible snapshot key with its info, in tx.
func get(tx *storage.Tx, key string) (snapshot.Info, storage.Snapshot, error) {
	info, err := tx.Info(key)
	if err != nil {
		return snapshot.Info{}, storage.Snapshot{}, err
	}
	if isPending(info) {
		return snapshot.Info{}, storage.Snapshot{}, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	sn, err := tx.Get(key)
	return info, sn, err
}

func isPending(info snapshot.Info) bool {
	_, ok := info.Labels[LabelPending]
	return ok
}

// lookup returns the visible snapshot key.
func (s *Snapshotter) lookup(ctx context.Context, key string) (info snapshot.Info, sn storage.Snapshot, err error) {
	err = s.store.View(ctx, func(tx *storage.Tx) error {
		info, sn, err = get(tx, key)
		return err
	})
	return info, sn, err
}

// Stat returns the info of the snapshot key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	info, _, err := s.lookup(ctx, key)
	return info, err
}

// Update changes the labels of a snapshot.
func (s *Snapshotter) Update(ctx context.Context, info snapshot.Info, fieldpaths ...string) (out snapshot.Info, err error) {
	if err := checkUpdate(info, fieldpaths); err != nil {
		return snapshot.Info{}, err
	}
	err = s.store.Update(ctx, func(tx *storage.Tx) error {
		if _, _, err := get(tx, info.Name); err != nil {
			return err
		}
		out, err = tx.UpdateInfo(info, fieldpaths...)
		return err
	})
	return out, err
}

// checkUpdate refuses an update that would set the reserved label.
func checkUpdate(info snapshot.Info, fieldpaths []string) error {
	_, setsAll := info.Labels[LabelPending]
	for _, p := range fieldpaths {
		if p == "labels."+LabelPending || (p == "labels" && setsAll) {
			return reserved(info.Name)
		}
	}
	if len(fieldpaths) == 0 && setsAll {
		return reserved(info.Name)
	}
	return nil
}

func reserved(key string) error {
	return fmt.Errorf("snapshot %q: label %q is reserved: %w", key, LabelPending, errdefs.ErrInvalidArgument)
}

// labels applies opts and refuses the reserved label.
func labels(key string, opts []snapshot.Opt) (map[string]string, error) {
	info, err := snapshot.ApplyOpts(opts...)
	if err != nil {
		return nil, err
	}
	if _, ok := info.Labels[LabelPending]; ok {
		return nil, reserved(key)
	}
	return info.Labels, nil
}

// Usage of the snapshot's own data.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshot.Usage, error) {
	_, sn, err := s.lookup(ctx, key)
	if err != nil {
		return snapshot.Usage{}, err
	}
	var u snapshot.Usage
	if ku, ok := s.b.(KindUsager); ok {
		u, err = ku.UsageOf(ctx, sn.ID, sn.Kind)
	} else {
		u, err = s.b.Usage(ctx, sn.ID)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Removed since the lookup: say so with the right class.
			if _, _, lerr := s.lookup(ctx, key); lerr != nil {
				return snapshot.Usage{}, lerr
			}
		}
		return snapshot.Usage{}, fmt.Errorf("usage of %q: %w", key, err)
	}
	return u, nil
}

// Mounts of an active snapshot or a view.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	_, sn, err := s.lookup(ctx, key)
	if err != nil {
		return nil, err
	}
	if sn.Kind == snapshot.KindCommitted {
		return nil, fmt.Errorf("mounts of %q: snapshot is committed: %w", key, errdefs.ErrFailedPrecondition)
	}
	return s.b.Mounts(sn.ID, sn.Kind, sn.ParentIDs), nil
}

// Prepare makes an active snapshot on parent.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshot.KindActive, key, parent, opts)
}

// View makes a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshot.KindView, key, parent, opts)
}

// create has the backend make the snapshot's data under a new id, then
// records it in one write transaction; see the package doc.
func (s *Snapshotter) create(ctx context.Context, kind snapshot.Kind, key, parent string, opts []snapshot.Opt) ([]mount.Mount, error) {
	l, err := labels(key, opts)
	if err != nil {
		return nil, err
	}

	s.changing.RLock()
	defer s.changing.RUnlock()
	id, err := s.store.NewID(ctx)
	if err != nil {
		return nil, err
	}
	done, err := s.inflight.Begin(key, []string{parent}, id)
	if err != nil {
		return nil, err
	}
	defer done()
	var parentIDs []string
	err = s.store.View(ctx, func(tx *storage.Tx) (err error) {
		parentIDs, err = tx.CheckCreate(kind, key, parent)
		return err
	})
	if err != nil {
		return nil, err
	}
	// From here on, an error must take the data away: finish even if the
	// caller has gone.
	undo := func(err error) error {
		if rerr := s.b.Remove(context.WithoutCancel(ctx), id); rerr != nil {
			err = errors.Join(err, fmt.Errorf("snapshot %q: removing what its creation left: %w", key, rerr))
		}
		return err
	}
	if err := s.b.Create(ctx, id, kind, slices.Clone(parentIDs)); err != nil {
		return nil, undo(fmt.Errorf("snapshot %q: %w", key, err))
	}
	all := s.backendLabels(id, kind, l)
	maps.Copy(all, l)
	var sn storage.Snapshot
	err = s.store.Batch(context.WithoutCancel(ctx), func(tx *storage.Tx) (err error) {
		sn, err = tx.CreateWithID(id, kind, key, parent, snapshot.WithLabels(all))
		return err
	})
	if err != nil {
		return nil, undo(err)
	}
	return s.b.Mounts(sn.ID, sn.Kind, sn.ParentIDs), nil
}

// Commit makes the active snapshot key the committed snapshot name.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	l, err := labels(name, opts)
	if err != nil {
		return err
	}
	s.changing.RLock()
	defer s.changing.RUnlock()
	// Fail early, before a possibly slow Backend.Commit, on what the
	// metastore would refuse anyway.
	var sn storage.Snapshot
	err = s.store.View(ctx, func(tx *storage.Tx) (err error) {
		if _, sn, err = get(tx, key); err != nil {
			return err
		}
		if sn.Kind != snapshot.KindActive {
			return fmt.Errorf("commit of %q: snapshot is %s, not active: %w", key, sn.Kind, errdefs.ErrFailedPrecondition)
		}
		if _, err := tx.Info(name); err == nil {
			return fmt.Errorf("commit of %q: snapshot %q: %w", key, name, errdefs.ErrAlreadyExists)
		} else if !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.b.Commit(ctx, sn.ID); err != nil {
		return fmt.Errorf("commit of %q: %w", key, err)
	}
	err = s.store.Batch(ctx, func(tx *storage.Tx) error {
		if _, _, err := get(tx, key); err != nil {
			return err
		}
		all := s.backendLabels(sn.ID, snapshot.KindCommitted, l)
		maps.Copy(all, l)
		_, err := tx.Commit(key, name, snapshot.WithLabels(all))
		return err
	})
	if err != nil {
		return err
	}
	if f, ok := s.b.(CommitFinisher); ok {
		if err := f.FinishCommit(context.WithoutCancel(ctx), sn.ID); err != nil {
			return fmt.Errorf("commit of %q: committed as %q, its active data left until it is removed: %w", key, name, err)
		}
	}
	return nil
}

// backendLabels are the Labeler's labels for id that the caller's labels
// do not set (none when b is no Labeler), in a map the caller may change.
func (s *Snapshotter) backendLabels(id string, kind snapshot.Kind, caller map[string]string) map[string]string {
	out := map[string]string{}
	lb, ok := s.b.(Labeler)
	if !ok {
		return out
	}
	for k, v := range lb.Labels(id, kind) {
		if _, set := caller[k]; !set && k != LabelPending {
			out[k] = v
		}
	}
	return out
}

// Remove deletes a snapshot with no children: the record, then the data.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	s.changing.RLock()
	defer s.changing.RUnlock()
	var id string
	err := s.store.Batch(ctx, func(tx *storage.Tx) (err error) {
		if _, _, err := get(tx, key); err != nil {
			return err
		}
		if s.inflight.Pinned(key) {
			return fmt.Errorf("remove %q: a snapshot is being made on it: %w", key, errdefs.ErrFailedPrecondition)
		}
		id, _, err = tx.Remove(key)
		return err
	})
	if err != nil {
		return err
	}
	if err := s.b.Remove(context.WithoutCancel(ctx), id); err != nil {
		// The snapshot is gone; what is left of its data is an orphan.
		return fmt.Errorf("remove %q: snapshot removed, its data left for cleanup: %w", key, err)
	}
	return nil
}

// Walk calls fn for each snapshot matching filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshot.WalkFunc, filters ...string) error {
	return s.store.View(ctx, func(tx *storage.Tx) error {
		return tx.Walk(func(info snapshot.Info) error {
			if isPending(info) {
				return nil
			}
			return fn(ctx, info)
		}, filters...)
	})
}

// Close closes the backend, when it is an io.Closer, and the metastore.
func (s *Snapshotter) Close() error {
	var err error
	if c, ok := s.b.(io.Closer); ok {
		err = c.Close()
	}
	return errors.Join(err, s.store.Close())
}

// Cleanup removes the data of listed ids no snapshot owns, then lets the
// backend clean up after itself.
func (c *cleaner) Cleanup(ctx context.Context) error {
	c.changing.Lock()
	defer c.changing.Unlock()
	if l, ok := c.b.(Lister); ok {
		listed, err := l.List(ctx)
		if err != nil {
			return fmt.Errorf("cleanup: list: %w", err)
		}
		var live map[string]string
		err = c.store.View(ctx, func(tx *storage.Tx) (err error) {
			live, err = tx.IDs()
			return err
		})
		if err != nil {
			return err
		}
		for _, id := range listed {
			if _, ok := live[id]; ok {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := c.b.Remove(ctx, id); err != nil {
				return fmt.Errorf("cleanup: remove orphan %q: %w", id, err)
			}
		}
	}
	if cl, ok := c.b.(snapshot.Cleaner); ok {
		if err := cl.Cleanup(ctx); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	return nil
}
