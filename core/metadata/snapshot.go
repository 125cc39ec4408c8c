package metadata

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
	"github.com/keel-runtime/keel/sdk/labels"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/storage"
)

// NewSnapshotter returns the namespaced view keeld serves over backend, the
// snapshotter plugin instance called name. The namespace of each call comes
// from its context (namespaces.NamespaceRequired) and is made on first use.
//
// Each namespaced key maps to an opaque backend key ("<seq>-<random>"), so
// two namespaces never collide; parents are recorded by namespaced name, and
// labels live here, not in the backend. Closing the view closes backend.
//
// Each call writes once. Prepare, View and Commit check the keys, the
// parent and the lease in a read transaction, hold the new key and pin the
// snapshot they stand on in memory (another call making the key is
// AlreadyExists, a Remove of the pinned one FailedPrecondition, a
// collection keeps it), call the backend, then record the result in one
// write transaction. Should the record fail, Prepare and View remove the
// backend snapshot (a crash in between leaves an orphan for Cleanup);
// Commit labels the backend's committed snapshot with where it comes from
// (LabelCommittedFrom, LabelCommittedAs), so that the first use after a
// crash, or the next call after a failed record, finishes it. Pending
// records an older keeld left are resolved against the backend on first
// use too. Remove deletes the record, durably, and returns; the backend
// snapshot is removed after it, in the background and in the order of the
// Removes (children before their parents), as containerd's collection
// does. A backend failure there, or a crash before it, only leaves an
// orphan for Cleanup; Cleanup, a collection and keel check first wait for
// the removals queued before them (DB.SettleSnapshotRemovals).
func NewSnapshotter(db *DB, name string, backend snapshot.Snapshotter) snapshot.Snapshotter {
	s := &nsSnapshotter{db: db, name: name, backend: backend}
	db.register(func(r *backends) { r.snapshotters[name] = s })
	return s
}

type nsSnapshotter struct {
	db      *DB
	name    string
	backend snapshot.Snapshotter
	// inflight holds, for the Prepare, View and Commit calls between their
	// check and their record, their new keys, the snapshots they stand on
	// (a parent, a committed active snapshot: pinned, not removed by
	// Remove or a collection) and their backend keys (not orphans).
	inflight storage.InFlight
	// removals are the backend snapshots whose records Remove deleted,
	// removed from the backend in the background.
	removals removals
}

var (
	_ snapshot.Snapshotter = (*nsSnapshotter)(nil)
	_ snapshot.Cleaner     = (*nsSnapshotter)(nil)
)

// snapRecord is a snapshot as stored under snapshots/<snapshotter>/<key>.
type snapRecord struct {
	key        string
	id         string
	kind       snapshot.Kind
	parent     string
	labels     map[string]string
	created    time.Time
	updated    time.Time
	pending    bool
	commitFrom string // for a pending commit: the active key committed
}

func (r snapRecord) info() snapshot.Info {
	return snapshot.Info{Kind: r.kind, Name: r.key, Parent: r.parent, Labels: r.labels, Created: r.created, Updated: r.updated}
}

func readSnap(b *bolt.Bucket, key string) (snapRecord, bool) {
	sb := b.Bucket([]byte(key))
	if sb == nil {
		return snapRecord{}, false
	}
	return snapRecord{
		key:        key,
		id:         string(sb.Get(keyID)),
		kind:       snapshot.ParseKind(string(sb.Get(keyKind))),
		parent:     string(sb.Get(keyParent)),
		labels:     readLabels(sb),
		created:    readTime(sb, keyCreatedAt),
		updated:    readTime(sb, keyUpdatedAt),
		pending:    sb.Get(keyPending) != nil,
		commitFrom: string(sb.Get(keyCommitFrom)),
	}, true
}

func writeSnap(b *bolt.Bucket, r snapRecord) error {
	sb, err := b.CreateBucket([]byte(r.key))
	if err != nil {
		return err
	}
	for _, kv := range [][2][]byte{
		{keyID, []byte(r.id)},
		{keyKind, []byte(r.kind.String())},
		{keyParent, []byte(r.parent)},
	} {
		if err := sb.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if r.pending {
		if err := sb.Put(keyPending, []byte("1")); err != nil {
			return err
		}
		if err := sb.Put(keyCommitFrom, []byte(r.commitFrom)); err != nil {
			return err
		}
	}
	if _, err := sb.CreateBucket(bucketChildren); err != nil {
		return err
	}
	if err := writeTime(sb, keyCreatedAt, r.created); err != nil {
		return err
	}
	if err := writeTime(sb, keyUpdatedAt, r.updated); err != nil {
		return err
	}
	return writeLabels(sb, r.labels)
}

// deleteSnap removes the record key and its entry in its parent's children.
func deleteSnap(b *bolt.Bucket, r snapRecord) error {
	if r.parent != "" {
		if pb := b.Bucket([]byte(r.parent)); pb != nil {
			if cb := pb.Bucket(bucketChildren); cb != nil {
				if err := cb.Delete([]byte(r.key)); err != nil {
					return err
				}
			}
		}
	}
	return b.DeleteBucket([]byte(r.key))
}

// lookup returns the visible (not pending) record of key.
func lookup(b *bolt.Bucket, key string) (snapRecord, error) {
	if b != nil {
		if r, ok := readSnap(b, key); ok && !r.pending {
			return r, nil
		}
	}
	return snapRecord{}, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
}

// newBackendKey makes a backend key unique across namespaces and restarts.
func (db *DB) newBackendKey() (string, error) {
	seq, err := db.nextSeq()
	if err != nil {
		return "", err
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d-%s", seq, hex.EncodeToString(rnd[:])), nil
}

// inflightKey names the snapshot key of namespace ns in s.inflight.
func inflightKey(ns, key string) string {
	if key == "" {
		return ""
	}
	return ns + "\x00" + key
}

// begin returns the call's namespace once pending records of this
// snapshotter have been resolved.
func (s *nsSnapshotter) begin(ctx context.Context) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	if err := s.recover(ctx); err != nil {
		return "", err
	}
	return ns, nil
}

// Stat looks key up. Under a lease (in ctx) the snapshot found is taken
// into the lease in the same transaction, as a writer of a blob the
// namespace holds takes the blob: a caller that goes on to use what it
// found (a pull skipping a layer unpacked already) would otherwise race a
// collection that sweeps it between the look and the use.
func (s *nsSnapshotter) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	ns, err := s.begin(ctx)
	if err != nil {
		return snapshot.Info{}, err
	}
	var r snapRecord
	look := func(tx *bolt.Tx) error {
		r, err = lookup(snapshotsBucket(tx, ns, s.name), key)
		return err
	}
	if _, leased := scope.Lease(ctx); !leased {
		err = s.db.view(look)
		return r.info(), err
	}
	err = s.db.update(func(tx *bolt.Tx) error {
		if err := look(tx); err != nil {
			return err
		}
		return attachToLease(ctx, tx, ns, LeaseResource{ID: key, Type: ResourceSnapshot + "/" + s.name})
	})
	return r.info(), err
}

func (s *nsSnapshotter) Update(ctx context.Context, info snapshot.Info, fieldpaths ...string) (snapshot.Info, error) {
	ns, err := s.begin(ctx)
	if err != nil {
		return snapshot.Info{}, err
	}
	var r snapRecord
	err = s.db.update(func(tx *bolt.Tx) error {
		b := snapshotsBucket(tx, ns, s.name)
		if r, err = lookup(b, info.Name); err != nil {
			return err
		}
		labels, err := updateLabels(r.labels, info.Labels, fieldpaths)
		if err != nil {
			return fmt.Errorf("snapshot %q: %w", info.Name, err)
		}
		if err := validateLabels(labels); err != nil {
			return fmt.Errorf("snapshot %q: %w", info.Name, err)
		}
		sb := b.Bucket([]byte(info.Name))
		if err := writeLabels(sb, labels); err != nil {
			return err
		}
		r.updated = time.Now().UTC()
		if err := writeTime(sb, keyUpdatedAt, r.updated); err != nil {
			return err
		}
		r.labels = readLabels(sb)
		return nil
	})
	return r.info(), err
}

// backendKey resolves key to its backend key.
func (s *nsSnapshotter) backendKey(ctx context.Context, key string) (snapRecord, error) {
	ns, err := s.begin(ctx)
	if err != nil {
		return snapRecord{}, err
	}
	var r snapRecord
	err = s.db.view(func(tx *bolt.Tx) error {
		r, err = lookup(snapshotsBucket(tx, ns, s.name), key)
		return err
	})
	return r, err
}

func (s *nsSnapshotter) Usage(ctx context.Context, key string) (snapshot.Usage, error) {
	r, err := s.backendKey(ctx, key)
	if err != nil {
		return snapshot.Usage{}, err
	}
	u, err := s.backend.Usage(ctx, r.id)
	if err != nil {
		return snapshot.Usage{}, fmt.Errorf("snapshot %q: %w", key, err)
	}
	return u, nil
}

func (s *nsSnapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	r, err := s.backendKey(ctx, key)
	if err != nil {
		return nil, err
	}
	if r.kind == snapshot.KindCommitted {
		return nil, fmt.Errorf("snapshot %q: committed snapshots have no mounts: %w", key, errdefs.ErrFailedPrecondition)
	}
	m, err := s.backend.Mounts(ctx, r.id)
	if err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	return m, nil
}

func (s *nsSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshot.KindActive, key, parent, opts)
}

func (s *nsSnapshotter) View(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshot.KindView, key, parent, opts)
}

// admit checks, in tx, that r can be recorded under ns: its key free, its
// parent committed (and, when parentID is set, still that backend
// snapshot), the lease in ctx there. It returns the parent's backend key.
func (s *nsSnapshotter) admit(ctx context.Context, tx *bolt.Tx, ns string, r snapRecord, parentID string) (string, error) {
	b := snapshotsBucket(tx, ns, s.name)
	if b != nil && b.Bucket([]byte(r.key)) != nil {
		return "", fmt.Errorf("snapshot %q: %w", r.key, errdefs.ErrAlreadyExists)
	}
	if r.parent != "" {
		p, err := lookup(b, r.parent)
		if err != nil {
			return "", fmt.Errorf("parent: %w", err)
		}
		if p.kind != snapshot.KindCommitted {
			return "", fmt.Errorf("parent %q: is %s, not committed: %w", r.parent, p.kind, errdefs.ErrFailedPrecondition)
		}
		if parentID != "" && p.id != parentID {
			return "", fmt.Errorf("parent %q: replaced while the snapshot was made: %w", r.parent, errdefs.ErrAborted)
		}
		parentID = p.id
	}
	if id, ok := scope.Lease(ctx); ok {
		if lb := leasesBucket(tx, ns); lb == nil || lb.Bucket([]byte(id)) == nil {
			return "", leaseNotFound(id)
		}
	}
	return parentID, nil
}

// put records r under ns, admitted in tx, pins its parent with a children
// entry and attaches it to the lease in ctx.
func (s *nsSnapshotter) put(ctx context.Context, tx *bolt.Tx, ns string, r snapRecord) error {
	b, err := createSnapshotsBucket(tx, ns, s.name)
	if err != nil {
		return err
	}
	if r.parent != "" {
		if err := b.Bucket([]byte(r.parent)).Bucket(bucketChildren).Put([]byte(r.key), nil); err != nil {
			return err
		}
	}
	if err := attachToLease(ctx, tx, ns, LeaseResource{ID: r.key, Type: ResourceSnapshot + "/" + s.name}); err != nil {
		return err
	}
	return writeSnap(b, r)
}

// confirm makes a pending record visible; for a commit it also removes the
// active record it came from. Aborted when the record is no longer ours.
func confirm(b *bolt.Bucket, r snapRecord) error {
	cur, ok := readSnap(b, r.key)
	if !ok || !cur.pending || cur.id != r.id {
		return fmt.Errorf("snapshot %q: pending record lost: %w", r.key, errdefs.ErrAborted)
	}
	sb := b.Bucket([]byte(r.key))
	if err := sb.Delete(keyPending); err != nil {
		return err
	}
	if err := sb.Delete(keyCommitFrom); err != nil {
		return err
	}
	if cur.commitFrom != "" {
		if from, ok := readSnap(b, cur.commitFrom); ok && !from.pending {
			return deleteSnap(b, from)
		}
	}
	return nil
}

func (s *nsSnapshotter) create(ctx context.Context, kind snapshot.Kind, key, parent string, opts []snapshot.Opt) ([]mount.Mount, error) {
	ns, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return nil, fmt.Errorf("snapshot key is empty: %w", errdefs.ErrInvalidArgument)
	}
	base, err := snapshot.ApplyOpts(opts...)
	if err != nil {
		return nil, err
	}
	if err := validateLabels(base.Labels); err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	base.Labels = labels.Clean(base.Labels)
	now := time.Now().UTC()
	r := snapRecord{key: key, kind: kind, parent: parent, labels: base.Labels, created: now, updated: now}
	if r.id, err = s.db.newBackendKey(); err != nil {
		return nil, err
	}
	done, err := s.inflight.Begin(inflightKey(ns, key), []string{inflightKey(ns, parent)}, r.id)
	if err != nil {
		return nil, err
	}
	defer done()
	var parentID string
	if err := s.db.view(func(tx *bolt.Tx) error {
		parentID, err = s.admit(ctx, tx, ns, r, "")
		return err
	}); err != nil {
		return nil, err
	}

	var m []mount.Mount
	if kind == snapshot.KindView {
		m, err = s.backend.View(ctx, r.id, parentID, snapshot.WithLabels(base.Labels))
	} else {
		m, err = s.backend.Prepare(ctx, r.id, parentID, snapshot.WithLabels(base.Labels))
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	// The backend snapshot exists: record it in one transaction, or take
	// it away (a crash in between leaves an orphan for Cleanup).
	if err := s.db.update(func(tx *bolt.Tx) error {
		if _, err := s.admit(ctx, tx, ns, r, parentID); err != nil {
			return err
		}
		return s.put(ctx, tx, ns, r)
	}); err != nil {
		if rerr := s.backend.Remove(context.WithoutCancel(ctx), r.id); rerr != nil {
			return nil, fmt.Errorf("snapshot %q: %w (and removing its backend snapshot %s: %v)", key, err, r.id, rerr)
		}
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	return m, nil
}

func (s *nsSnapshotter) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	ns, err := s.begin(ctx)
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("snapshot name is empty: %w", errdefs.ErrInvalidArgument)
	}
	base, err := snapshot.ApplyOpts(opts...)
	if err != nil {
		return err
	}
	if err := validateLabels(base.Labels); err != nil {
		return fmt.Errorf("snapshot %q: %w", name, err)
	}
	base.Labels = labels.Clean(base.Labels)
	now := time.Now().UTC()
	r := snapRecord{key: name, kind: snapshot.KindCommitted, labels: base.Labels, created: now, updated: now}
	if r.id, err = s.db.newBackendKey(); err != nil {
		return err
	}
	done, err := s.inflight.Begin(inflightKey(ns, name), []string{inflightKey(ns, key)}, r.id)
	if err != nil {
		return err
	}
	defer done()
	var activeID string
	if err := s.db.view(func(tx *bolt.Tx) error {
		active, err := s.committable(tx, ns, key, "")
		if err != nil {
			return err
		}
		activeID, r.parent = active.id, active.parent
		_, err = s.admit(ctx, tx, ns, r, "")
		return err
	}); err != nil {
		return err
	}

	// The backend snapshot tells where it comes from, so that recovery
	// can finish the commit should a crash come before the record.
	blabels := maps.Clone(base.Labels)
	if blabels == nil {
		blabels = map[string]string{}
	}
	blabels[LabelCommittedFrom], blabels[LabelCommittedAs] = activeID, ns+"/"+name
	if err := s.backend.Commit(ctx, r.id, activeID, snapshot.WithLabels(blabels)); err != nil {
		// The plugin may have committed all the same (it died before it
		// answered): the next call looks.
		s.recoverAgain()
		return fmt.Errorf("commit %q to %q: %w", key, name, err)
	}
	// The backend has committed: the record follows in one transaction.
	// Should it fail, the active record names a backend snapshot that is
	// gone: the next call recovers the commit, as after a crash.
	if err := s.db.update(func(tx *bolt.Tx) error { return s.commitRecord(ctx, tx, ns, r, key, activeID) }); err != nil {
		s.recoverAgain()
		return fmt.Errorf("commit %q to %q: %w", key, name, err)
	}
	return nil
}

// recoverAgain has the next call recover first.
func (s *nsSnapshotter) recoverAgain() {
	s.db.recoverMu.Lock()
	defer s.db.recoverMu.Unlock()
	delete(s.db.recovered, s.name)
}

// Labels keeld gives a backend snapshot it commits: the backend key of the
// active snapshot committed, and "<namespace>/<name>" of the committed one.
// A backend snapshot with them that no record names, while the active
// snapshot's record is there, is a commit the first use finishes.
const (
	LabelCommittedFrom = "io.keel/snapshot.committed-from"
	LabelCommittedAs   = "io.keel/snapshot.committed-as"
)

// committable returns the active record key of ns, in tx: NotFound when
// missing, FailedPrecondition when not active, Aborted when id is set and
// the record names another backend snapshot.
func (s *nsSnapshotter) committable(tx *bolt.Tx, ns, key, id string) (snapRecord, error) {
	active, err := lookup(snapshotsBucket(tx, ns, s.name), key)
	if err != nil {
		return snapRecord{}, err
	}
	if active.kind != snapshot.KindActive {
		return snapRecord{}, fmt.Errorf("snapshot %q: is %s, not active: %w", key, active.kind, errdefs.ErrFailedPrecondition)
	}
	if id != "" && active.id != id {
		return snapRecord{}, fmt.Errorf("snapshot %q: replaced while it was committed: %w", key, errdefs.ErrAborted)
	}
	return active, nil
}

// commitRecord records, in tx, the backend's commit of the active snapshot
// key (backend key activeID) as r: the active record goes, r takes its
// place under the parent and on the lease in ctx.
func (s *nsSnapshotter) commitRecord(ctx context.Context, tx *bolt.Tx, ns string, r snapRecord, key, activeID string) error {
	active, err := s.committable(tx, ns, key, activeID)
	if err != nil {
		return err
	}
	r.parent = active.parent
	if _, err := s.admit(ctx, tx, ns, r, ""); err != nil {
		return err
	}
	if err := deleteSnap(snapshotsBucket(tx, ns, s.name), active); err != nil {
		return err
	}
	return s.put(ctx, tx, ns, r)
}

func (s *nsSnapshotter) Remove(ctx context.Context, key string) error {
	ns, err := s.begin(ctx)
	if err != nil {
		return err
	}
	var r snapRecord
	if err := s.db.update(func(tx *bolt.Tx) error {
		b := snapshotsBucket(tx, ns, s.name)
		if r, err = lookup(b, key); err != nil {
			return err
		}
		if cb := b.Bucket([]byte(key)).Bucket(bucketChildren); cb != nil {
			if child, _ := cb.Cursor().First(); child != nil {
				return fmt.Errorf("remove %q: snapshot has children (%q): %w", key, child, errdefs.ErrFailedPrecondition)
			}
		}
		if s.inflight.Pinned(inflightKey(ns, key)) {
			return fmt.Errorf("remove %q: a snapshot is being made on it: %w", key, errdefs.ErrFailedPrecondition)
		}
		return deleteSnap(b, r)
	}); err != nil {
		return err
	}
	// The name is gone, durably: the backend snapshot goes after it, in
	// the background. A failure, or a crash first, leaves an orphan for
	// Cleanup.
	s.removals.add(context.WithoutCancel(ctx), r.id, s.backend.Remove)
	return nil
}

func (s *nsSnapshotter) Walk(ctx context.Context, fn snapshot.WalkFunc, fs ...string) error {
	ns, err := s.begin(ctx)
	if err != nil {
		return err
	}
	filter, err := filters.Parse(fs...)
	if err != nil {
		return err
	}
	var infos []snapshot.Info
	if err := s.db.view(func(tx *bolt.Tx) error {
		b := snapshotsBucket(tx, ns, s.name)
		if b == nil {
			return nil
		}
		return b.ForEachBucket(func(k []byte) error {
			r, _ := readSnap(b, string(k))
			if info := r.info(); !r.pending && filters.Match(filter, snapshot.AdaptInfo(info)) {
				infos = append(infos, info)
			}
			return nil
		})
	}); err != nil {
		return err
	}
	// fn runs outside the transaction: it may call back into the store.
	for _, info := range infos {
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// Close waits for the backend removals queued (see removals), then
// closes the backend.
func (s *nsSnapshotter) Close() error {
	s.removals.settle(context.Background())
	return s.backend.Close()
}

// removals removes backend snapshots one after the other, in the order
// they were added, on a goroutine that runs while there are some. The zero
// value is ready.
type removals struct {
	// busy is held by the goroutine while it removes one snapshot, and
	// by hold.
	busy sync.Mutex

	mu      sync.Mutex
	queue   []removal
	running bool
	// added and done count the removals added and finished; progress is
	// closed, and replaced, each time done grows.
	added, done uint64
	progress    chan struct{}
}

type removal struct {
	ctx    context.Context
	id     string
	remove func(context.Context, string) error
}

// add queues the removal of the backend snapshot id with remove.
func (q *removals) add(ctx context.Context, id string, remove func(context.Context, string) error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queue = append(q.queue, removal{ctx, id, remove})
	q.added++
	if q.progress == nil {
		q.progress = make(chan struct{})
	}
	if !q.running {
		q.running = true
		go q.run()
	}
}

func (q *removals) run() {
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		r := q.queue[0]
		q.queue[0] = removal{}
		q.queue = q.queue[1:]
		q.mu.Unlock()
		// Whatever the outcome: a snapshot left is an orphan for Cleanup.
		q.busy.Lock()
		_ = r.remove(r.ctx, r.id)
		q.busy.Unlock()
		q.mu.Lock()
		q.done++
		close(q.progress)
		q.progress = make(chan struct{})
		q.mu.Unlock()
	}
}

// hold keeps the goroutine from removing anything until release is called.
func (q *removals) hold() (release func()) {
	q.busy.Lock()
	return q.busy.Unlock
}

// settle waits until every removal added before it has finished, or ctx
// ends.
func (q *removals) settle(ctx context.Context) error {
	q.mu.Lock()
	want := q.added
	q.mu.Unlock()
	for {
		q.mu.Lock()
		done, progress := q.done, q.progress
		q.mu.Unlock()
		if done >= want {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// referencedIDs returns every backend key a record of this snapshotter
// refers to, pending ones included, across namespaces.
func (s *nsSnapshotter) referencedIDs() (map[string]bool, error) {
	ids := map[string]bool{}
	err := s.db.view(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bucketV1)
		if v1 == nil {
			return nil
		}
		return v1.ForEachBucket(func(ns []byte) error {
			b := snapshotsBucket(tx, string(ns), s.name)
			if b == nil {
				return nil
			}
			return b.ForEachBucket(func(k []byte) error {
				ids[string(b.Bucket(k).Get(keyID))] = true
				return nil
			})
		})
	})
	return ids, err
}

// Cleanup removes the backend snapshots no namespace refers to (left by a
// crash or a failed backend Remove), children before parents, then lets the
// backend clean up after itself when it can.
func (s *nsSnapshotter) Cleanup(ctx context.Context) error {
	if _, err := s.removeOrphans(ctx, false); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if c, ok := s.backend.(snapshot.Cleaner); ok {
		if err := c.Cleanup(ctx); err != nil && !errdefs.IsNotImplemented(err) {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	return nil
}

// removeOrphans removes (or, dry, lists) the backend snapshots no record
// refers to, children before parents, and returns their backend keys.
//
// The backend is listed before the records are read: a backend snapshot
// is either named by a record before it exists (an older keeld's pending
// record), or in s.inflight from before it exists until its record is
// written (or, its record failed, until the next call recovers it); a
// record is removed before its backend snapshot goes, and a backend key is
// never reused. So a snapshot listed, then found neither making nor
// referenced, can never become referenced again.
func (s *nsSnapshotter) removeOrphans(ctx context.Context, dry bool) ([]string, error) {
	if err := s.recover(ctx); err != nil {
		return nil, err
	}
	// The backend snapshots whose records are gone are removed first;
	// those queued since wait for this pass, so that a parent is never
	// removed here while its child is being removed there.
	if err := s.removals.settle(ctx); err != nil {
		return nil, err
	}
	defer s.removals.hold()()
	all := map[string]string{} // backend key -> parent
	if err := s.backend.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		all[info.Name] = info.Parent
		return nil
	}); err != nil {
		return nil, err
	}
	// Backend snapshots being made are read before the records: one made
	// since the listing is either still making, or recorded by now.
	making := s.inflight.MakingIDs()
	ids, err := s.referencedIDs()
	if err != nil {
		return nil, err
	}
	orphans := map[string]string{}
	for id, parent := range all {
		if !ids[id] && !making[id] {
			orphans[id] = parent
		}
	}
	var removed []string
	for len(orphans) > 0 {
		parents := map[string]bool{}
		for _, p := range orphans {
			parents[p] = true
		}
		var leaves []string
		for id := range orphans {
			if !parents[id] {
				leaves = append(leaves, id)
			}
		}
		if len(leaves) == 0 {
			break // a cycle cannot happen; do not spin if it does
		}
		slices.Sort(leaves)
		for _, id := range leaves {
			if !dry {
				if err := s.backend.Remove(ctx, id); err != nil && !errdefs.IsNotFound(err) {
					return removed, err
				}
			}
			delete(orphans, id)
			removed = append(removed, id)
		}
	}
	return removed, nil
}

// recover resolves, once per DB and snapshotter, the pending records a crash
// left: a record whose backend snapshot exists is confirmed, the others are
// dropped.
func (s *nsSnapshotter) recover(ctx context.Context) error {
	s.db.recoverMu.Lock()
	defer s.db.recoverMu.Unlock()
	if s.db.recovered[s.name] {
		return nil
	}
	type pending struct {
		ns string
		r  snapRecord
	}
	var found []pending
	if err := s.db.view(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bucketV1)
		if v1 == nil {
			return nil
		}
		return v1.ForEachBucket(func(ns []byte) error {
			b := snapshotsBucket(tx, string(ns), s.name)
			if b == nil {
				return nil
			}
			return b.ForEachBucket(func(k []byte) error {
				if r, _ := readSnap(b, string(k)); r.pending {
					found = append(found, pending{string(ns), r})
				}
				return nil
			})
		})
	}); err != nil {
		return err
	}
	exists := make([]bool, len(found))
	for i, p := range found {
		_, err := s.backend.Stat(ctx, p.r.id)
		switch {
		case err == nil:
			exists[i] = true
		case errdefs.IsNotFound(err):
		default:
			return fmt.Errorf("snapshotter %s: resolving pending snapshot %q: %w", s.name, p.r.key, err)
		}
	}
	if err := s.db.update(func(tx *bolt.Tx) error {
		for i, p := range found {
			b := snapshotsBucket(tx, p.ns, s.name)
			var err error
			if exists[i] {
				err = confirm(b, p.r)
			} else if cur, ok := readSnap(b, p.r.key); ok && cur.pending {
				err = deleteSnap(b, cur)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.recoverCommits(ctx); err != nil {
		return fmt.Errorf("snapshotter %s: %w", s.name, err)
	}
	if s.db.recovered == nil {
		s.db.recovered = map[string]bool{}
	}
	s.db.recovered[s.name] = true
	return nil
}

// recoverCommits finishes the commits a crash (or a failed write) cut
// between the backend's commit and the record: a backend snapshot keeld
// committed that no record names, whose active snapshot's record is
// still there, is recorded in its place, with the labels the backend
// keeps. Other unnamed ones are orphans, left to Cleanup.
func (s *nsSnapshotter) recoverCommits(ctx context.Context) error {
	var made []snapshot.Info
	if err := s.backend.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		made = append(made, info)
		return nil
	}, `labels."`+LabelCommittedFrom+`"`); err != nil {
		return err
	}
	if len(made) == 0 {
		return nil
	}
	making := s.inflight.MakingIDs()
	return s.db.update(func(tx *bolt.Tx) error {
		type located struct {
			ns string
			r  snapRecord
		}
		byID := map[string]located{}
		if err := forEachNamespace(tx, func(ns string) error {
			b := snapshotsBucket(tx, ns, s.name)
			if b == nil {
				return nil
			}
			return b.ForEachBucket(func(k []byte) error {
				r, _ := readSnap(b, string(k))
				byID[r.id] = located{ns, r}
				return nil
			})
		}); err != nil {
			return err
		}
		for _, info := range made {
			if _, named := byID[info.Name]; named || making[info.Name] {
				continue
			}
			from := byID[info.Labels[LabelCommittedFrom]]
			ns, name, _ := strings.Cut(info.Labels[LabelCommittedAs], "/")
			if from.ns != ns || from.r.kind != snapshot.KindActive || from.r.pending || name == "" {
				continue
			}
			lbls := maps.Clone(info.Labels)
			delete(lbls, LabelCommittedFrom)
			delete(lbls, LabelCommittedAs)
			r := snapRecord{key: name, id: info.Name, kind: snapshot.KindCommitted, labels: lbls, created: info.Created, updated: info.Updated}
			// No lease: the call that held one is gone.
			err := s.commitRecord(context.WithoutCancel(scope.WithNamespace(context.Background(), ns)), tx, ns, r, from.r.key, from.r.id)
			if err != nil && !errdefs.IsAlreadyExists(err) {
				return fmt.Errorf("finishing the commit of %q to %q: %w", from.r.key, name, err)
			}
		}
		return nil
	})
}
