// Package storage is a snapshot metastore for snapshotter plugins: it keeps
// each snapshot's key, short numeric id, parent, kind, labels and times in a
// bbolt file and enforces the lifecycle and error classes of sdk/snapshot,
// so a snapshotter only manages directories named by id.
//
// Transactions are explicit (no tx hidden in a context): Store.View and
// Store.Update run a function with a Tx, which is committed when the
// function returns nil and rolled back otherwise. A snapshotter does cheap
// filesystem steps (renames) inside Update so that the record and the
// directory change together, and slow ones (copies, syncs) outside it.
//
// A snapshotter that makes a snapshot's data outside any transaction and
// wants one write per call takes an id from Store.NewID, checks with
// Tx.CheckCreate in a View, makes the data, then records it with
// Tx.CreateWithID; InFlight holds the key and the parent meanwhile, and
// Store.UnclaimedIDs names, after a crash, the ids whose data no record
// claims. sdk/snapshot/backend does all of this.
//
// # Schema
//
//	v1                          bucket: layout version 1
//	├── version                 uvarint schema version (1)
//	├── idblock                 uvarint first, uvarint last id of NewID's last block
//	└── snapshots               bucket: one bucket per snapshot, by key
//	    └── <key>               bucket (key of an active/view, name of a committed)
//	        ├── id              uvarint, from snapshots' NextSequence; never reused
//	        ├── kind            one byte: snapshot.Kind
//	        ├── parent          key of the parent (absent for none)
//	        ├── created         time.Time MarshalBinary
//	        ├── updated         time.Time MarshalBinary
//	        ├── labels          bucket: label key → value
//	        └── children        bucket: child key → empty (only in committed ones)
//
// # Errors
//
// A key in use is AlreadyExists; a missing key or parent NotFound;
// preparing on a parent that is not committed, committing a snapshot that
// is not active, and removing a snapshot with children FailedPrecondition;
// an empty key or an unknown field path InvalidArgument.
package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
	"github.com/keel-runtime/keel/sdk/labels"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// OpenTimeout is how long Open waits for the file lock another process
// holds before it fails with Unavailable.
const OpenTimeout = 2 * time.Second

// Store is a snapshot metastore in one bbolt file.
type Store struct {
	db *bolt.DB
	// writers counts Batch calls in flight: a lone one commits at once.
	writers atomic.Int32

	// ids is the block of ids NewID hands out: next up to end.
	idMu      sync.Mutex
	next, end uint64
}

// Open opens (creating it when missing) the metastore at path.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, boltOptions)
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("snapshot metastore %s is locked by another process: %w", path, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("snapshot metastore %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucketIfNotExists(bucketV1)
		if err != nil {
			return err
		}
		if raw := v1.Get(keyVersion); raw != nil {
			if v, _ := binary.Uvarint(raw); v != schemaVersion {
				return fmt.Errorf("snapshot metastore %s has schema version %d, this build knows %d: %w",
					path, v, schemaVersion, errdefs.ErrFailedPrecondition)
			}
		} else if err := v1.Put(keyVersion, uvarint(schemaVersion)); err != nil {
			return err
		}
		_, err = v1.CreateBucketIfNotExists(bucketSnapshots)
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	db.MaxBatchDelay = batchDelay
	return &Store{db: db}, nil
}

// boltOptions open the metastore. The freelist is not written at each
// commit but rebuilt by Open (as etcd does): a commit writes less, and a
// crash loses nothing, since the freelist is only derived from the pages.
var boltOptions = &bolt.Options{Timeout: OpenTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}

// idBlock is how many ids NewID reserves with one write transaction.
const idBlock = 64

// NewID hands out an id no snapshot has had, for Tx.CreateWithID. Ids are
// reserved a block at a time, durably, before any is handed out, so an id
// is never handed out twice, even across a crash.
func (s *Store) NewID(ctx context.Context) (string, error) {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.next == 0 || s.next > s.end {
		var start, end uint64
		err := s.Update(ctx, func(tx *Tx) error {
			start, end = tx.snap.Sequence()+1, tx.snap.Sequence()+idBlock
			if err := tx.snap.SetSequence(end); err != nil {
				return err
			}
			return tx.tx.Bucket(bucketV1).Put(keyIDBlock, binary.AppendUvarint(uvarint(start), end))
		})
		if err != nil {
			return "", fmt.Errorf("reserving snapshot ids: %w", err)
		}
		s.next, s.end = start, end
	}
	id := s.next
	s.next++
	return strconv.FormatUint(id, 10), nil
}

// UnclaimedIDs are the ids of the block NewID reserved last that no
// snapshot holds: handed out to calls a crash (or a failure) stopped before
// they recorded their snapshot, never handed out, or held by snapshots
// since removed. Whatever data a snapshotter keeps under them belongs to
// no snapshot. Only the last block can have such ids: a snapshotter
// removes their data when it opens the store, before NewID reserves
// another block.
func (s *Store) UnclaimedIDs(ctx context.Context) ([]string, error) {
	var out []string
	err := s.View(ctx, func(tx *Tx) error {
		raw := tx.tx.Bucket(bucketV1).Get(keyIDBlock)
		if raw == nil {
			return nil
		}
		start, n := binary.Uvarint(raw)
		end, m := binary.Uvarint(raw[max(n, 0):])
		if n <= 0 || m <= 0 || end < start || end-start >= 1<<20 {
			return fmt.Errorf("snapshot metastore: bad id block record: %w", errdefs.ErrDataLoss)
		}
		live, err := tx.IDs()
		if err != nil {
			return err
		}
		for id := start; id <= end; id++ {
			if sid := strconv.FormatUint(id, 10); live[sid] == "" {
				out = append(out, sid)
			}
		}
		return nil
	})
	return out, err
}

// batchDelay is how long a Batch call waits for others to join it; short,
// as callers are waiting on it.
const batchDelay = 2 * time.Millisecond

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// View runs fn in a read-only transaction.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(btx *bolt.Tx) error { return fn(newTx(btx)) })
}

// Update runs fn in a read-write transaction, committed when fn returns nil.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(btx *bolt.Tx) error { return fn(newTx(btx)) })
}

// Batch runs fn in a read-write transaction shared with other concurrent
// Batch calls, so that many of them cost one disk sync. fn may run more
// than once (when another call in the batch fails), so it must only touch
// the metastore; do filesystem steps after Batch returns. A call with no
// other in flight commits at once rather than wait for company that is not
// coming: sequential callers pay no batching delay.
func (s *Store) Batch(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	run := func(btx *bolt.Tx) error { return fn(newTx(btx)) }
	defer s.writers.Add(-1)
	if s.writers.Add(1) == 1 {
		return s.db.Update(run)
	}
	return s.db.Batch(run)
}

// Tx is one metastore transaction.
type Tx struct {
	tx   *bolt.Tx
	snap *bolt.Bucket
	now  time.Time
}

func newTx(btx *bolt.Tx) *Tx {
	return &Tx{tx: btx, snap: btx.Bucket(bucketV1).Bucket(bucketSnapshots), now: time.Now().UTC()}
}

// Snapshot is what a snapshotter needs to find a snapshot's directories.
type Snapshot struct {
	// ID names the snapshot's directory; ids are never reused.
	ID   string
	Kind snapshot.Kind
	// ParentIDs are the ids of the parent chain, nearest first (overlay's
	// lowerdirs, in order).
	ParentIDs []string
}

// Get returns the snapshot key with its parent chain's ids.
func (t *Tx) Get(key string) (Snapshot, error) {
	b, err := t.bucket(key)
	if err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{ID: readID(b), Kind: snapshot.Kind(readKind(b))}
	for parent := string(b.Get(keyParent)); parent != ""; {
		pb := t.snap.Bucket([]byte(parent))
		if pb == nil {
			return Snapshot{}, fmt.Errorf("snapshot %q: parent %q missing from the metastore: %w", key, parent, errdefs.ErrInternal)
		}
		s.ParentIDs = append(s.ParentIDs, readID(pb))
		parent = string(pb.Get(keyParent))
	}
	return s, nil
}

// Info returns the info of the snapshot key.
func (t *Tx) Info(key string) (snapshot.Info, error) {
	b, err := t.bucket(key)
	if err != nil {
		return snapshot.Info{}, err
	}
	return readInfo(key, b), nil
}

// Create records a new active snapshot or view named key on parent (empty
// for none) with the labels opts set, and returns it with its new id.
func (t *Tx) Create(kind snapshot.Kind, key, parent string, opts ...snapshot.Opt) (Snapshot, error) {
	return t.create(kind, key, parent, "", opts)
}

// CreateWithID is Create with an id Store.NewID handed out, for a
// snapshotter that makes a snapshot's data before it records it (so that
// making a snapshot costs one write transaction; a crash in between leaves
// data Store.UnclaimedIDs names).
func (t *Tx) CreateWithID(id string, kind snapshot.Kind, key, parent string, opts ...snapshot.Opt) (Snapshot, error) {
	if id == "" {
		return Snapshot{}, fmt.Errorf("snapshot %q: id is empty: %w", key, errdefs.ErrInvalidArgument)
	}
	return t.create(kind, key, parent, id, opts)
}

// CheckCreate returns what Create would refuse, else the ids of the parent
// chain the new snapshot would have, nearest first.
func (t *Tx) CheckCreate(kind snapshot.Kind, key, parent string) ([]string, error) {
	if kind != snapshot.KindActive && kind != snapshot.KindView {
		return nil, fmt.Errorf("snapshot %q: cannot create a %s snapshot: %w", key, kind, errdefs.ErrInvalidArgument)
	}
	if key == "" {
		return nil, fmt.Errorf("snapshot key is empty: %w", errdefs.ErrInvalidArgument)
	}
	if t.snap.Bucket([]byte(key)) != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrAlreadyExists)
	}
	if parent == "" {
		return nil, nil
	}
	pb := t.snap.Bucket([]byte(parent))
	if pb == nil {
		return nil, fmt.Errorf("snapshot %q: parent %q: %w", key, parent, errdefs.ErrNotFound)
	}
	if k := snapshot.Kind(readKind(pb)); k != snapshot.KindCommitted {
		return nil, fmt.Errorf("snapshot %q: parent %q is %s, not committed: %w", key, parent, k, errdefs.ErrFailedPrecondition)
	}
	p, err := t.Get(parent)
	if err != nil {
		return nil, err
	}
	return append([]string{p.ID}, p.ParentIDs...), nil
}

// create is Create, with the id given (from Store.NewID) or, when empty,
// the next of the sequence.
func (t *Tx) create(kind snapshot.Kind, key, parent, id string, opts []snapshot.Opt) (Snapshot, error) {
	if _, err := t.CheckCreate(kind, key, parent); err != nil {
		return Snapshot{}, err
	}
	base, err := snapshot.ApplyOpts(opts...)
	if err != nil {
		return Snapshot{}, err
	}
	var seq uint64
	if id == "" {
		seq, err = t.snap.NextSequence()
	} else {
		seq, err = strconv.ParseUint(id, 10, 64)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %q: id %q: %w", key, id, err)
	}
	info := snapshot.Info{Kind: kind, Name: key, Parent: parent, Labels: base.Labels, Created: t.now, Updated: t.now}
	if err := t.put(info, seq); err != nil {
		return Snapshot{}, err
	}
	return t.Get(key)
}

// Commit turns the active snapshot key into the committed snapshot name,
// keeping its id, with the labels opts set. It returns the id.
func (t *Tx) Commit(key, name string, opts ...snapshot.Opt) (string, error) {
	if name == "" {
		return "", fmt.Errorf("commit of %q: name is empty: %w", key, errdefs.ErrInvalidArgument)
	}
	base, err := snapshot.ApplyOpts(opts...)
	if err != nil {
		return "", err
	}
	b, err := t.bucket(key)
	if err != nil {
		return "", err
	}
	if k := snapshot.Kind(readKind(b)); k != snapshot.KindActive {
		return "", fmt.Errorf("commit of %q: snapshot is %s, not active: %w", key, k, errdefs.ErrFailedPrecondition)
	}
	if t.snap.Bucket([]byte(name)) != nil {
		return "", fmt.Errorf("commit of %q: snapshot %q: %w", key, name, errdefs.ErrAlreadyExists)
	}
	id, err := strconv.ParseUint(readID(b), 10, 64)
	if err != nil {
		return "", err
	}
	old := readInfo(key, b)
	parent := old.Parent
	if err := t.snap.DeleteBucket([]byte(key)); err != nil {
		return "", err
	}
	info := snapshot.Info{Kind: snapshot.KindCommitted, Name: name, Parent: parent, Labels: base.Labels, Created: t.now, Updated: t.now}
	if err := t.put(info, id); err != nil {
		return "", err
	}
	if parent != "" {
		children := t.snap.Bucket([]byte(parent)).Bucket(bucketChildren)
		if err := children.Delete([]byte(key)); err != nil {
			return "", err
		}
		if err := children.Put([]byte(name), nil); err != nil {
			return "", err
		}
	}
	return strconv.FormatUint(id, 10), nil
}

// Remove deletes the record of the snapshot key and returns its id and kind.
func (t *Tx) Remove(key string) (string, snapshot.Kind, error) {
	b, err := t.bucket(key)
	if err != nil {
		return "", snapshot.KindUnknown, err
	}
	if c := b.Bucket(bucketChildren); c != nil {
		if k, _ := c.Cursor().First(); k != nil {
			return "", snapshot.KindUnknown, fmt.Errorf("remove %q: snapshot has children (%q): %w", key, k, errdefs.ErrFailedPrecondition)
		}
	}
	id, kind := readID(b), snapshot.Kind(readKind(b))
	if parent := b.Get(keyParent); parent != nil {
		if pb := t.snap.Bucket(parent); pb != nil {
			if err := pb.Bucket(bucketChildren).Delete([]byte(key)); err != nil {
				return "", snapshot.KindUnknown, err
			}
		}
	}
	if err := t.snap.DeleteBucket([]byte(key)); err != nil {
		return "", snapshot.KindUnknown, err
	}
	return id, kind, nil
}

// UpdateInfo changes the labels of the snapshot info.Name by sdk/labels'
// rule: fieldpaths are "labels" (all of them) or "labels.<key>" (one; an
// empty or absent value deletes it); none means all labels. It stamps
// Updated and returns the updated info.
func (t *Tx) UpdateInfo(info snapshot.Info, fieldpaths ...string) (snapshot.Info, error) {
	return t.updateLabels(info, fieldpaths, true)
}

// Relabel is UpdateInfo without stamping Updated: for labels a snapshotter
// changes itself while it makes the snapshot (backend's pending mark), so
// that a new snapshot's Info has Created == Updated.
func (t *Tx) Relabel(info snapshot.Info, fieldpaths ...string) (snapshot.Info, error) {
	return t.updateLabels(info, fieldpaths, false)
}

func (t *Tx) updateLabels(info snapshot.Info, fieldpaths []string, stamp bool) (snapshot.Info, error) {
	b, err := t.bucket(info.Name)
	if err != nil {
		return snapshot.Info{}, err
	}
	cur := readInfo(info.Name, b)
	next, err := labels.Update(cur.Labels, info.Labels, fieldpaths...)
	if err != nil {
		return snapshot.Info{}, fmt.Errorf("update of %q: %w", info.Name, err)
	}
	if err := b.DeleteBucket(bucketLabels); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
		return snapshot.Info{}, err
	}
	if err := putLabels(b, next); err != nil {
		return snapshot.Info{}, err
	}
	if stamp {
		if err := putTime(b, keyUpdated, t.now); err != nil {
			return snapshot.Info{}, err
		}
	}
	return readInfo(info.Name, b), nil
}

// Walk calls fn with each snapshot that matches any of filters (all with
// none), in key order. Fields: name, parent, kind, labels.<key>.
func (t *Tx) Walk(fn func(snapshot.Info) error, filterExprs ...string) error {
	f, err := filters.Parse(filterExprs...)
	if err != nil {
		return err
	}
	return t.snap.ForEachBucket(func(k []byte) error {
		info := readInfo(string(k), t.snap.Bucket(k))
		if !filters.Match(f, snapshot.AdaptInfo(info)) {
			return nil
		}
		return fn(info)
	})
}

// IDs returns the id of every snapshot, mapped to its key: what a
// snapshotter's Cleanup keeps.
func (t *Tx) IDs() (map[string]string, error) {
	ids := map[string]string{}
	err := t.snap.ForEachBucket(func(k []byte) error {
		ids[readID(t.snap.Bucket(k))] = string(k)
		return nil
	})
	return ids, err
}

func (t *Tx) bucket(key string) (*bolt.Bucket, error) {
	if key == "" {
		return nil, fmt.Errorf("snapshot key is empty: %w", errdefs.ErrInvalidArgument)
	}
	b := t.snap.Bucket([]byte(key))
	if b == nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	return b, nil
}

// put writes a new snapshot bucket and links it under its parent.
func (t *Tx) put(info snapshot.Info, id uint64) error {
	b, err := t.snap.CreateBucket([]byte(info.Name))
	if err != nil {
		return err
	}
	if err := b.Put(keyID, uvarint(id)); err != nil {
		return err
	}
	if err := b.Put(keyKind, []byte{byte(info.Kind)}); err != nil {
		return err
	}
	if info.Parent != "" {
		if err := b.Put(keyParent, []byte(info.Parent)); err != nil {
			return err
		}
		children, err := t.snap.Bucket([]byte(info.Parent)).CreateBucketIfNotExists(bucketChildren)
		if err != nil {
			return err
		}
		if err := children.Put([]byte(info.Name), nil); err != nil {
			return err
		}
	}
	if err := putTime(b, keyCreated, info.Created); err != nil {
		return err
	}
	if err := putTime(b, keyUpdated, info.Updated); err != nil {
		return err
	}
	return putLabels(b, info.Labels)
}

// putLabels stores m's labels; empty values are not stored.
func putLabels(b *bolt.Bucket, m map[string]string) error {
	m = labels.Clean(m)
	if len(m) == 0 {
		return nil
	}
	lb, err := b.CreateBucketIfNotExists(bucketLabels)
	if err != nil {
		return err
	}
	for k, v := range m {
		if err := lb.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}

func putTime(b *bolt.Bucket, key []byte, t time.Time) error {
	raw, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func readInfo(key string, b *bolt.Bucket) snapshot.Info {
	info := snapshot.Info{
		Kind:   snapshot.Kind(readKind(b)),
		Name:   key,
		Parent: string(b.Get(keyParent)),
	}
	info.Created.UnmarshalBinary(b.Get(keyCreated))
	info.Updated.UnmarshalBinary(b.Get(keyUpdated))
	if lb := b.Bucket(bucketLabels); lb != nil {
		info.Labels = map[string]string{}
		lb.ForEach(func(k, v []byte) error {
			info.Labels[string(k)] = string(v)
			return nil
		})
	}
	return info
}

func readID(b *bolt.Bucket) string {
	v, _ := binary.Uvarint(b.Get(keyID))
	return strconv.FormatUint(v, 10)
}

func readKind(b *bolt.Bucket) byte {
	if k := b.Get(keyKind); len(k) == 1 {
		return k[0]
	}
	return 0
}

func uvarint(v uint64) []byte {
	return binary.AppendUvarint(nil, v)
}
