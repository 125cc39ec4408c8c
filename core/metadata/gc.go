package metadata

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// backends are the plugin views made over db, which garbage collection
// deletes from.
type backends struct {
	content      *nsContent
	snapshotters map[string]*nsSnapshotter
}

func (db *DB) register(fn func(*backends)) {
	db.regMu.Lock()
	defer db.regMu.Unlock()
	if db.reg.snapshotters == nil {
		db.reg.snapshotters = map[string]*nsSnapshotter{}
	}
	fn(&db.reg)
}

func (db *DB) registered() (*nsContent, map[string]*nsSnapshotter) {
	db.regMu.Lock()
	defer db.regMu.Unlock()
	return db.reg.content, maps.Clone(db.reg.snapshotters)
}

// SetGCTrigger sets what removing a root (an image, a lease) calls: keeld's
// scheduler, which collects soon after.
func (db *DB) SetGCTrigger(fn func()) {
	db.regMu.Lock()
	defer db.regMu.Unlock()
	db.gcTrigger = fn
}

func (db *DB) triggerGC() {
	db.regMu.Lock()
	fn := db.gcTrigger
	db.regMu.Unlock()
	if fn != nil {
		fn()
	}
}

// SetAfterSweepHook sets a function a collection calls between its two
// phases (metadata committed, plugins not yet told): tests use it to crash
// keeld there.
func (db *DB) SetAfterSweepHook(fn func()) {
	db.regMu.Lock()
	defer db.regMu.Unlock()
	db.afterSweep = fn
}

var _ gc.Collector = (*DB)(nil)

// GarbageCollect marks from the roots of every namespace (images,
// containers, unexpired leases and the leases held (see Leases.Hold),
// objects labelled containerd.io/gc.root,
// snapshots being created) along gc.ref labels, lease resources and
// snapshot parents (see core/gc), then:
//
//  1. in one write transaction, removes the content and snapshot records
//     nothing reaches and the expired leases;
//  2. outside any transaction, deletes from the plugins every object no
//     metadata refers to: the blobs and snapshots just swept, and orphans
//     left by a crash between the two phases or before. A blob goes only
//     when no namespace holds it; snapshots go children first.
//
// A crash between the phases loses nothing referenced: what phase 2 would
// have deleted is an orphan for the next collection. With opts.DryRun
// nothing changes and the report also lists what is kept and the root that
// keeps it.
func (db *DB) GarbageCollect(ctx context.Context, opts gc.Options) (gc.Report, error) {
	db.gcMu.Lock()
	defer db.gcMu.Unlock()
	start := time.Now()
	var rep gc.Report
	swept := map[string]bool{} // content digests and "<snapshotter>/<backend key>"
	held := db.heldLeases()
	fn := func(tx *bolt.Tx) error { return markSweep(tx, time.Now(), held, opts.DryRun, &rep, swept) }
	var err error
	if opts.DryRun {
		err = db.view(fn)
	} else {
		err = db.update(fn)
	}
	if err != nil {
		return gc.Report{}, fmt.Errorf("garbage collection: %w", err)
	}
	db.regMu.Lock()
	hook := db.afterSweep
	db.regMu.Unlock()
	if hook != nil && !opts.DryRun {
		hook()
	}

	cs, sns := db.registered()
	if cs != nil {
		if err := cs.collectBackend(ctx, opts.DryRun, swept, &rep); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(sns)) {
		if err := sns[name].collectBackend(ctx, opts.DryRun, swept, &rep); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// graph is the reference graph of the whole database, read in one
// transaction.
type graph struct {
	roots   []gc.Node
	refs    map[gc.Node][]gc.Node // of images, containers, leases
	blobs   map[gc.Node]int64     // content -> size
	labels  map[gc.Node]map[string]string
	snaps   map[gc.Node]snapRecord
	expired []gc.Node // leases
	why     map[gc.Node]string
}

func readGraph(tx *bolt.Tx, now time.Time, held map[leaseKey]bool) *graph {
	g := &graph{
		refs:   map[gc.Node][]gc.Node{},
		blobs:  map[gc.Node]int64{},
		labels: map[gc.Node]map[string]string{},
		snaps:  map[gc.Node]snapRecord{},
		why:    map[gc.Node]string{},
	}
	root := func(n gc.Node, why string) {
		g.roots = append(g.roots, n)
		g.why[n] = why
	}
	v1 := tx.Bucket(bucketV1)
	if v1 == nil {
		return g
	}
	v1.ForEachBucket(func(nsk []byte) error {
		ns := string(nsk)
		if b := imagesBucket(tx, ns); b != nil {
			b.ForEachBucket(func(k []byte) error {
				img, _ := readImage(b, string(k))
				n := gc.Node{Kind: gc.KindImage, Namespace: ns, Name: img.Name}
				root(n, "image "+img.Name)
				g.refs[n] = append(gc.References(ns, img.Labels), gc.Content(ns, img.Target.Digest))
				return nil
			})
		}
		if b := bucketPath(tx, bucketV1, nsk, bucketConts); b != nil {
			// Container records come with the runtime issue; whatever is
			// there is a root, with its labels' and snapshot's references.
			b.ForEach(func(k, v []byte) error {
				n := gc.Node{Kind: gc.KindContainer, Namespace: ns, Name: string(k)}
				root(n, "container "+string(k))
				if cb := b.Bucket(k); cb != nil {
					refs := gc.References(ns, readLabels(cb))
					if sn, key := cb.Get([]byte("snapshotter")), cb.Get([]byte("snapshotkey")); len(sn) > 0 && len(key) > 0 {
						refs = append(refs, gc.Snapshot(ns, string(sn), string(key)))
					}
					g.refs[n] = refs
				}
				return nil
			})
		}
		if b := leasesBucket(tx, ns); b != nil {
			b.ForEachBucket(func(k []byte) error {
				l, _ := readLease(b, string(k))
				n := gc.Node{Kind: gc.KindLease, Namespace: ns, Name: l.ID}
				if gc.Expired(l.Labels, now) && !held[leaseKey{ns, l.ID}] {
					g.expired = append(g.expired, n)
					return nil
				}
				root(n, "lease "+l.ID)
				var refs []gc.Node
				for _, r := range leaseResources(b.Bucket(k)) {
					switch {
					case r.Type == ResourceContent:
						refs = append(refs, gc.Content(ns, digest.Digest(r.ID)))
					case r.Type != ResourceIngests:
						refs = append(refs, gc.Snapshot(ns, r.Type[len(ResourceSnapshot)+1:], r.ID))
					}
				}
				g.refs[n] = refs
				return nil
			})
		}
		if b := blobBucket(tx, ns); b != nil {
			b.ForEachBucket(func(k []byte) error {
				info, _ := readBlob(b, digest.Digest(k))
				n := gc.Content(ns, info.Digest)
				g.blobs[n] = info.Size
				g.labels[n] = info.Labels
				if gc.IsRoot(info.Labels) {
					root(n, "label "+gc.LabelRoot)
				}
				return nil
			})
		}
		if sb := bucketPath(tx, bucketV1, nsk, bucketSnaps); sb != nil {
			sb.ForEachBucket(func(snk []byte) error {
				b := sb.Bucket(snk)
				return b.ForEachBucket(func(k []byte) error {
					r, _ := readSnap(b, string(k))
					n := gc.Snapshot(ns, string(snk), r.key)
					g.snaps[n] = r
					switch {
					case r.pending:
						root(n, "being created")
					case gc.IsRoot(r.labels):
						root(n, "label "+gc.LabelRoot)
					}
					return nil
				})
			})
		}
		return nil
	})
	return g
}

// references of a node: a root's recorded ones, a blob's labels, a
// snapshot's labels and parent (and, for a commit in flight, the active
// snapshot it commits).
func (g *graph) references(n gc.Node) []gc.Node {
	switch n.Kind {
	case gc.KindContent:
		return gc.References(n.Namespace, g.labels[n])
	case gc.KindSnapshot:
		r, ok := g.snaps[n]
		if !ok {
			return nil
		}
		sn, _ := gc.SplitSnapshot(n.Name)
		out := gc.References(n.Namespace, r.labels)
		if r.parent != "" {
			out = append(out, gc.Snapshot(n.Namespace, sn, r.parent))
		}
		if r.commitFrom != "" {
			out = append(out, gc.Snapshot(n.Namespace, sn, r.commitFrom))
		}
		return out
	}
	return g.refs[n]
}

// markSweep marks, then (unless dry) removes the unreached records within
// tx, reporting each decision; swept collects the backend objects phase 2
// may delete.
func markSweep(tx *bolt.Tx, now time.Time, held map[leaseKey]bool, dry bool, rep *gc.Report, swept map[string]bool) error {
	g := readGraph(tx, now, held)
	kept := gc.Mark(g.roots, g.references)

	for _, n := range g.expired {
		rep.Removed = append(rep.Removed, gc.Object{Kind: gc.KindLease, Namespace: n.Namespace, Name: n.Name, Reason: "expired"})
		if !dry {
			if err := leasesBucket(tx, n.Namespace).DeleteBucket([]byte(n.Name)); err != nil {
				return err
			}
		}
	}
	for _, n := range sortedNodes(g.blobs) {
		if r, ok := kept[n]; ok {
			if dry {
				rep.Kept = append(rep.Kept, gc.Object{Kind: gc.KindContent, Namespace: n.Namespace, Name: n.Name, Root: g.why[r], Size: g.blobs[n]})
			}
			continue
		}
		rep.Removed = append(rep.Removed, gc.Object{Kind: gc.KindContent, Namespace: n.Namespace, Name: n.Name, Reason: "unreferenced", Size: g.blobs[n]})
		swept[n.Name] = true
		if !dry {
			if err := blobBucket(tx, n.Namespace).DeleteBucket([]byte(n.Name)); err != nil {
				return err
			}
		}
	}
	for _, n := range sortedNodes(g.snaps) {
		if r, ok := kept[n]; ok {
			if dry {
				rep.Kept = append(rep.Kept, gc.Object{Kind: gc.KindSnapshot, Namespace: n.Namespace, Name: n.Name, Root: g.why[r]})
			}
			continue
		}
		rec := g.snaps[n]
		sn, _ := gc.SplitSnapshot(n.Name)
		rep.Removed = append(rep.Removed, gc.Object{Kind: gc.KindSnapshot, Namespace: n.Namespace, Name: n.Name, Reason: "unreferenced"})
		swept[sn+"/"+rec.id] = true
		if !dry {
			if b := snapshotsBucket(tx, n.Namespace, sn); b != nil && b.Bucket([]byte(rec.key)) != nil {
				if err := deleteSnap(b, rec); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func sortedNodes[V any](m map[gc.Node]V) []gc.Node {
	out := slices.Collect(maps.Keys(m))
	slices.SortFunc(out, func(a, b gc.Node) int {
		if a.Namespace != b.Namespace {
			if a.Namespace < b.Namespace {
				return -1
			}
			return 1
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// collectBackend deletes the blobs of the backend that no namespace holds:
// those just swept silently, others reported as orphans. Each delete holds
// the digest's lock and checks again, so a commit recording the digest
// meanwhile keeps it.
func (s *nsContent) collectBackend(ctx context.Context, dry bool, swept map[string]bool, rep *gc.Report) error {
	var all []content.Info
	if err := s.backend.Walk(ctx, func(info content.Info) error {
		all = append(all, info)
		return nil
	}); err != nil {
		return fmt.Errorf("content: listing the backend: %w", err)
	}
	for _, info := range all {
		if err := s.collectBlob(ctx, info, dry, swept, rep); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	return nil
}

func (s *nsContent) collectBlob(ctx context.Context, info content.Info, dry bool, swept map[string]bool, rep *gc.Report) error {
	unlock := s.db.lockDigest(info.Digest)
	defer unlock()
	var referenced bool
	if err := s.db.view(func(tx *bolt.Tx) error {
		referenced = blobReferenced(tx, info.Digest)
		return nil
	}); err != nil {
		return err
	}
	// On a dry run the swept digests still have their records: they are
	// reported with their namespaces already.
	if referenced || (dry && swept[info.Digest.String()]) {
		return nil
	}
	if !swept[info.Digest.String()] {
		rep.Removed = append(rep.Removed, gc.Object{Kind: gc.KindContent, Name: info.Digest.String(), Size: info.Size,
			Reason: "orphan: no namespace refers to it"})
	}
	if dry {
		return nil
	}
	if err := s.backend.Delete(ctx, info.Digest); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("content %s: %w", info.Digest, err)
	}
	return nil
}

// collectBackend removes the backend snapshots no record refers to,
// children first: those just swept silently, others reported as orphans.
func (s *nsSnapshotter) collectBackend(ctx context.Context, dry bool, swept map[string]bool, rep *gc.Report) error {
	removed, err := s.removeOrphans(ctx, dry)
	for _, id := range removed {
		if !swept[s.name+"/"+id] {
			rep.Removed = append(rep.Removed, gc.Object{Kind: gc.KindSnapshot, Name: s.name + "/" + id,
				Reason: "orphan: no namespace refers to it"})
		}
	}
	if err != nil {
		return fmt.Errorf("snapshotter %s: %w", s.name, err)
	}
	if !dry {
		if c, ok := s.backend.(snapshot.Cleaner); ok {
			if err := c.Cleanup(ctx); err != nil && !errdefs.IsNotImplemented(err) {
				return fmt.Errorf("snapshotter %s: cleanup: %w", s.name, err)
			}
		}
	}
	return nil
}
