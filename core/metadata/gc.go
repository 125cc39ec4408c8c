package metadata

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
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

// SetIfRunning sets how a background collection (gc.Options.Background) marks
// its calls to a plugin whose metadata sweep removed nothing: such calls
// must reach the plugin only if it runs now, failing at once with
// Unavailable otherwise, and must not keep it running (keeld's is
// pluginhost.IfRunning). Unset, a background collection calls every
// plugin, as any other does.
func (db *DB) SetIfRunning(fn func(context.Context) context.Context) {
	db.regMu.Lock()
	defer db.regMu.Unlock()
	db.ifRunning = fn
}

// pluginContext is the context of a collection's calls to one plugin, and
// whether they are made only if the plugin runs (see GarbageCollect).
func (db *DB) pluginContext(ctx context.Context, opts gc.Options, swept bool) (context.Context, bool) {
	db.regMu.Lock()
	fn := db.ifRunning
	db.regMu.Unlock()
	if !opts.Background || swept || fn == nil {
		return ctx, false
	}
	return fn(ctx), true
}

// pluginError adds the error of a plugin's part of a collection to rep,
// unless the calls were made only if the plugin runs and it did not: it
// was left alone, as asked.
func pluginError(rep *gc.Report, ifRunning bool, err error) {
	if err == nil || ifRunning && errdefs.IsUnavailable(err) {
		return
	}
	rep.Errors = append(rep.Errors, err.Error())
}

var _ gc.Collector = (*DB)(nil)

// GarbageCollect marks from the roots of every namespace (images,
// containers, unexpired leases and the leases held (see Leases.Hold),
// objects labelled containerd.io/gc.root,
// snapshots being created and those they are made on) along gc.ref labels, lease resources and
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
//
// A background collection (opts.Background: the scheduler's tick and
// triggers) does phase 2 in full for a plugin it swept something of; a
// plugin it swept nothing of is called only if it runs now, without keeping
// it running (SetIfRunning), so that keeld's own collections never start a
// plugin stopped for idleness to find nothing. Its orphans and aged
// ingests then go with the next collection that finds it running, or the
// next on-demand one (see core/gc).
func (db *DB) GarbageCollect(ctx context.Context, opts gc.Options) (gc.Report, error) {
	db.gcMu.Lock()
	defer db.gcMu.Unlock()
	start := time.Now()
	var rep gc.Report
	swept := map[string]bool{} // content digests and "<snapshotter>/<backend key>"
	held := db.heldLeases()
	var leased map[string][]string // backend ingest ref -> live leases
	fn := func(tx *bolt.Tx) error {
		var err error
		leased, err = markSweep(tx, time.Now(), held, db.pinnedSnapshots(), opts.DryRun, &rep, swept)
		return err
	}
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

	// What the sweep removed of each plugin, before phase 2 adds orphans.
	var sweptContent bool
	sweptSnaps := map[string]bool{}
	for _, o := range rep.Removed {
		switch o.Kind {
		case gc.KindContent:
			sweptContent = true
		case gc.KindSnapshot:
			sn, _ := gc.SplitSnapshot(o.Name)
			sweptSnaps[sn] = true
		}
	}
	cs, sns := db.registered()
	if cs != nil {
		pctx, ifRunning := db.pluginContext(ctx, opts, sweptContent)
		pluginError(&rep, ifRunning, cs.collectBackend(pctx, opts.DryRun, swept, &rep))
		pluginError(&rep, ifRunning, cs.collectIngests(pctx, time.Now(), opts, leased, &rep))
	}
	for _, name := range slices.Sorted(maps.Keys(sns)) {
		pctx, ifRunning := db.pluginContext(ctx, opts, sweptSnaps[name])
		pluginError(&rep, ifRunning, sns[name].collectBackend(pctx, opts.DryRun, swept, &rep))
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// pinnedSnapshots are the snapshots a Prepare or View in flight stands on.
func (db *DB) pinnedSnapshots() []gc.Node {
	_, sns := db.registered()
	var out []gc.Node
	for name, s := range sns {
		for _, k := range s.inflight.PinnedKeys() {
			ns, key, _ := strings.Cut(k, "\x00")
			out = append(out, gc.Snapshot(ns, name, key))
		}
	}
	return out
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
	// ingests maps the backend ref of each ingest attached to a live
	// lease to those leases.
	ingests map[string][]string
}

func readGraph(tx *bolt.Tx, now time.Time, held map[leaseKey]bool) *graph {
	g := &graph{
		refs:    map[gc.Node][]gc.Node{},
		blobs:   map[gc.Node]int64{},
		labels:  map[gc.Node]map[string]string{},
		snaps:   map[gc.Node]snapRecord{},
		why:     map[gc.Node]string{},
		ingests: map[string][]string{},
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
					case r.Type == ResourceIngests:
						bref := backendRef(ns, r.ID)
						g.ingests[bref] = append(g.ingests[bref], l.ID)
					default:
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
// may delete. It returns the live leases of each backend ingest ref.
func markSweep(tx *bolt.Tx, now time.Time, held map[leaseKey]bool, pinned []gc.Node, dry bool, rep *gc.Report, swept map[string]bool) (map[string][]string, error) {
	g := readGraph(tx, now, held)
	for _, n := range pinned {
		g.roots = append(g.roots, n)
		g.why[n] = "a snapshot is being made on it"
	}
	return g.ingests, sweep(tx, g, dry, rep, swept)
}

func sweep(tx *bolt.Tx, g *graph, dry bool, rep *gc.Report, swept map[string]bool) error {
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

// Ingests lists every partial ingest of the content store with what a
// collection knows of it (see gc.Ingest), in the order of the backend's
// refs: gc.CollectIngest tells whether a collection removes each and why.
// Writing is what this process's writers hold (none when keeld is not
// running). Without a content store the list is empty.
func (db *DB) Ingests(ctx context.Context) ([]gc.Ingest, error) {
	cs, _ := db.registered()
	if cs == nil {
		return nil, nil
	}
	held := db.heldLeases()
	var leased map[string][]string
	if err := db.view(func(tx *bolt.Tx) error {
		leased = readGraph(tx, time.Now(), held).ingests
		return nil
	}); err != nil {
		return nil, err
	}
	list, _, err := cs.ingests(ctx, leased)
	out := make([]gc.Ingest, len(list))
	for i, in := range list {
		out[i] = in.Ingest
	}
	return out, err
}

// ingestState is an ingest as a collection sees it, with its backend ref.
type ingestState struct {
	gc.Ingest
	bref string
}

// ingestRecord names a namespace's ingest.
type ingestRecord struct{ ns, ref string }

// ingests joins the backend's ingests with the namespaces' records and
// the live leases of each backend ref; it also returns the records whose
// backend ingest is gone, by backend ref.
func (s *nsContent) ingests(ctx context.Context, leased map[string][]string) ([]ingestState, map[string]ingestRecord, error) {
	recs := map[string]ingestRecord{} // by backend ref
	if err := s.db.view(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bucketV1)
		if v1 == nil {
			return nil
		}
		return v1.ForEachBucket(func(nsk []byte) error {
			b := ingestsBucket(tx, string(nsk))
			if b == nil {
				return nil
			}
			return b.ForEachBucket(func(k []byte) error {
				recs[readIngest(b.Bucket(k)).bref] = ingestRecord{string(nsk), string(k)}
				return nil
			})
		})
	}); err != nil {
		return nil, nil, err
	}
	sts, err := s.backend.ListStatuses(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("content: listing the backend's ingests: %w", err)
	}
	slices.SortFunc(sts, func(a, b content.Status) int { return strings.Compare(a.Ref, b.Ref) })
	out := make([]ingestState, 0, len(sts))
	for _, st := range sts {
		// An orphan (no record) is named by its backend ref.
		r, ok := recs[st.Ref]
		delete(recs, st.Ref)
		if !ok {
			r.ref = st.Ref
		}
		out = append(out, ingestState{bref: st.Ref, Ingest: gc.Ingest{Namespace: r.ns, Ref: r.ref, Size: st.Offset,
			UpdatedAt: st.UpdatedAt, Writing: s.db.isWriting(st.Ref), Leases: leased[st.Ref]}})
	}
	return out, recs, nil
}

// collectIngests applies gc.CollectIngest to every ingest of the backend:
// those of a namespace and orphans (a backend ingest whose record a crash
// lost). Records whose backend ingest is gone are dropped. An ingest is
// removed under the writers' lock, so no writer of this process opens it
// meanwhile; one held by a writer elsewhere is Unavailable and stays.
func (s *nsContent) collectIngests(ctx context.Context, now time.Time, opts gc.Options, leased map[string][]string, rep *gc.Report) error {
	list, stale, err := s.ingests(ctx, leased)
	if err != nil {
		return err
	}
	for _, in := range list {
		remove, why := gc.CollectIngest(in.Ingest, now, opts)
		obj := gc.Object{Kind: gc.KindIngest, Namespace: in.Namespace, Name: in.Ref, Size: in.Size}
		if !remove {
			if opts.DryRun {
				obj.Root = why
				rep.Kept = append(rep.Kept, obj)
			}
			continue
		}
		if in.Namespace == "" {
			why = "orphan: no namespace refers to it; " + why
		}
		obj.Reason = why
		if !opts.DryRun {
			removed, err := s.removeIngest(ctx, in.bref, in.Namespace, in.Ref)
			if err != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("ingest %s: %v", in.Ref, err))
				continue
			}
			if !removed {
				continue // a writer took it meanwhile
			}
		}
		rep.Removed = append(rep.Removed, obj)
	}
	// Records left are of ingests the backend no longer has (a crash, a
	// backend reset): nothing to keep.
	for bref, r := range stale {
		if opts.DryRun {
			continue
		}
		if err := s.dropStaleRecord(ctx, bref, r.ns, r.ref); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("ingest %s: %v", r.ref, err))
		}
	}
	return nil
}

// dropStaleRecord drops the record of an ingest the backend did not list,
// unless a writer made it since.
func (s *nsContent) dropStaleRecord(ctx context.Context, bref, ns, ref string) error {
	s.db.writingMu.Lock()
	defer s.db.writingMu.Unlock()
	if s.db.writers[bref] > 0 {
		return nil
	}
	if _, err := s.backend.Status(ctx, bref); !errdefs.IsNotFound(err) {
		return err // there after all (nil), or unknown
	}
	return s.db.update(func(tx *bolt.Tx) error {
		if b := ingestsBucket(tx, ns); b == nil || b.Bucket([]byte(ref)) == nil || readIngest(b.Bucket([]byte(ref))).bref != bref {
			return nil
		}
		return dropIngest(tx, ns, ref)
	})
}

// removeIngest aborts the backend ingest bref and drops its record (ns,
// ref; none for an orphan), unless a writer holds it: removed is false
// then.
func (s *nsContent) removeIngest(ctx context.Context, bref, ns, ref string) (removed bool, err error) {
	s.db.writingMu.Lock()
	defer s.db.writingMu.Unlock()
	if s.db.writers[bref] > 0 {
		return false, nil
	}
	if err := s.backend.Abort(ctx, bref); errdefs.IsUnavailable(err) {
		return false, nil // a writer of another process
	} else if err != nil && !errdefs.IsNotFound(err) {
		return false, err
	}
	if ns == "" {
		return true, nil
	}
	return true, s.db.update(func(tx *bolt.Tx) error { return dropIngest(tx, ns, ref) })
}
