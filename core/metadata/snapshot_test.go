package metadata

// These tests import the native snapshotter plugin package: test code only,
// so core/metadata keeps importing no plugin.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

func openNative(t *testing.T, root string) snapshot.Snapshotter {
	t.Helper()
	b, err := native.New(t.Context(), sdk.Env{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newSnapshotter returns the namespaced view over a native backend and the
// backend itself.
func newSnapshotter(t *testing.T) (*DB, snapshot.Snapshotter, snapshot.Snapshotter) {
	t.Helper()
	db := newDB(t)
	backend := openNative(t, t.TempDir())
	s := NewSnapshotter(db, "native", backend)
	t.Cleanup(func() { s.Close() })
	return db, s, backend
}

func nsCtx(t *testing.T, ns string) context.Context {
	return scope.WithNamespace(t.Context(), ns)
}

func backendID(t *testing.T, db *DB, ns, key string) string {
	t.Helper()
	var id string
	db.view(func(tx *bolt.Tx) error {
		if b := snapshotsBucket(tx, ns, "native"); b != nil {
			r, _ := readSnap(b, key)
			id = r.id
		}
		return nil
	})
	return id
}

func TestSnapshotNamespaceIsolation(t *testing.T) {
	db, s, backend := newSnapshotter(t)
	a, b := nsCtx(t, "a"), nsCtx(t, "b")

	for _, ctx := range []context.Context{a, b} {
		if _, err := s.Prepare(ctx, "k", ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, "base", "k"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Prepare(ctx, "k", "base"); err != nil {
			t.Fatal(err)
		}
	}
	ida, idb := backendID(t, db, "a", "k"), backendID(t, db, "b", "k")
	if ida == "" || idb == "" || ida == idb {
		t.Fatalf("backend keys %q and %q: want two distinct ones", ida, idb)
	}
	info, err := backend.Stat(t.Context(), ida)
	if err != nil || info.Parent != backendID(t, db, "a", "base") {
		t.Fatalf("backend stat %q = %+v, %v; want parent a/base", ida, info, err)
	}

	// Namespaces are made on first use.
	if _, err := db.Namespaces().Get(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}

	if err := s.Remove(a, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(a, "k"); !errdefs.IsNotFound(err) {
		t.Fatalf("stat removed = %v", err)
	}
	if info, err := s.Stat(b, "k"); err != nil || info.Parent != "base" || info.Kind != snapshot.KindActive {
		t.Fatalf("b's k = %+v, %v", info, err)
	}
	// The backend snapshot goes in the background, before a settle ends.
	if err := db.SettleSnapshotRemovals(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Stat(t.Context(), ida); !errdefs.IsNotFound(err) {
		t.Fatalf("backend snapshot of removed key: %v", err)
	}

	var names []string
	s.Walk(b, func(_ context.Context, info snapshot.Info) error {
		names = append(names, info.Name)
		return nil
	})
	if len(names) != 2 {
		t.Fatalf("b walks %v, want base and k", names)
	}

	// A namespace with snapshots cannot be deleted.
	if err := db.Namespaces().Delete(t.Context(), "b"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete namespace with snapshots = %v", err)
	}
	if _, err := s.Stat(t.Context(), "k"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("stat without namespace = %v, want InvalidArgument", err)
	}
}

func TestSnapshotErrors(t *testing.T) {
	_, s, _ := newSnapshotter(t)
	ctx := nsCtx(t, "ns")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Prepare(ctx, "active", "")
	must(err)
	_, err = s.Prepare(ctx, "c-active", "")
	must(err)
	must(s.Commit(ctx, "committed", "c-active"))
	_, err = s.View(ctx, "view", "committed")
	must(err)

	for _, tc := range []struct {
		desc  string
		call  func() error
		check func(error) bool
	}{
		{"prepare existing key", func() error { _, err := s.Prepare(ctx, "active", ""); return err }, errdefs.IsAlreadyExists},
		{"prepare on a committed name", func() error { _, err := s.Prepare(ctx, "committed", ""); return err }, errdefs.IsAlreadyExists},
		{"missing parent", func() error { _, err := s.Prepare(ctx, "x", "nope"); return err }, errdefs.IsNotFound},
		{"active parent", func() error { _, err := s.Prepare(ctx, "x", "active"); return err }, errdefs.IsFailedPrecondition},
		{"view parent", func() error { _, err := s.View(ctx, "x", "view"); return err }, errdefs.IsFailedPrecondition},
		{"commit a view", func() error { return s.Commit(ctx, "x", "view") }, errdefs.IsFailedPrecondition},
		{"commit a committed", func() error { return s.Commit(ctx, "x", "committed") }, errdefs.IsFailedPrecondition},
		{"commit missing", func() error { return s.Commit(ctx, "x", "nope") }, errdefs.IsNotFound},
		{"commit to existing name", func() error { return s.Commit(ctx, "committed", "active") }, errdefs.IsAlreadyExists},
		{"remove parent with children", func() error { return s.Remove(ctx, "committed") }, errdefs.IsFailedPrecondition},
		{"remove missing", func() error { return s.Remove(ctx, "nope") }, errdefs.IsNotFound},
		{"mounts of committed", func() error { _, err := s.Mounts(ctx, "committed"); return err }, errdefs.IsFailedPrecondition},
		{"usage of missing", func() error { _, err := s.Usage(ctx, "nope"); return err }, errdefs.IsNotFound},
		{"empty key", func() error { _, err := s.Prepare(ctx, "", ""); return err }, errdefs.IsInvalidArgument},
		{"bad update path", func() error {
			_, err := s.Update(ctx, snapshot.Info{Name: "active"}, "kind")
			return err
		}, errdefs.IsInvalidArgument},
		{"bad filter", func() error {
			return s.Walk(ctx, func(context.Context, snapshot.Info) error { return nil }, "labels.==")
		}, errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := tc.call(); !tc.check(err) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	// A failed commit leaves the active snapshot as it was.
	if info, err := s.Stat(ctx, "active"); err != nil || info.Kind != snapshot.KindActive {
		t.Fatalf("active after failed commit = %+v, %v", info, err)
	}
	if _, err := s.Mounts(ctx, "active"); err != nil {
		t.Fatalf("mounts of active: %v", err)
	}
}

func TestSnapshotLabelsAndWalk(t *testing.T) {
	_, s, backend := newSnapshotter(t)
	ctx := nsCtx(t, "ns")
	if _, err := s.Prepare(ctx, "a", "", snapshot.WithLabels(map[string]string{"x": "1", "io.keel/y": "2"})); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "a", snapshot.WithLabels(map[string]string{"x": "base"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, "v", "base"); err != nil {
		t.Fatal(err)
	}
	info, err := s.Update(ctx, snapshot.Info{Name: "v", Labels: map[string]string{"z": "3"}}, "labels.z")
	if err != nil || !maps.Equal(info.Labels, map[string]string{"z": "3"}) {
		t.Fatalf("update = %+v, %v", info, err)
	}
	// Labels live in keeld's metadata, not in the backend.
	if st, _ := s.Stat(ctx, "v"); st.Labels["z"] != "3" || !st.Updated.After(st.Created) {
		t.Fatalf("stat after update = %+v", st)
	}
	bid := ""
	backend.Walk(ctx, func(_ context.Context, bi snapshot.Info) error {
		if bi.Kind == snapshot.KindView {
			bid = bi.Name
		}
		return nil
	})
	if bi, _ := backend.Stat(ctx, bid); bi.Labels["z"] != "" {
		t.Fatalf("update reached the backend: %+v", bi)
	}

	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"base", "v"}},
		{[]string{"kind==view"}, []string{"v"}},
		{[]string{"kind==committed"}, []string{"base"}},
		{[]string{"parent==base"}, []string{"v"}},
		{[]string{"labels.x==base"}, []string{"base"}},
		{[]string{"labels.z"}, []string{"v"}},
		{[]string{"name~=^b", "labels.z==3"}, []string{"base", "v"}},
		{[]string{"name~=^b,labels.z==3"}, nil},
	} {
		var got []string
		if err := s.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
			got = append(got, info.Name)
			return nil
		}, tc.filters...); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) || (len(got) > 0 && (got[0] != tc.want[0] || got[len(got)-1] != tc.want[len(tc.want)-1])) {
			t.Errorf("walk %q = %v, want %v", tc.filters, got, tc.want)
		}
	}
}

// TestSnapshotCrashRecovery builds what a crash left: pending records an
// older keeld wrote before its backend call, and a commit the backend made
// but no record names yet; and checks the next use resolves them.
func TestSnapshotCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	broot := filepath.Join(dir, "native")
	db, err := Open(filepath.Join(dir, "meta.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	backend := openNative(t, broot)
	s := NewSnapshotter(db, "native", backend).(*nsSnapshotter)
	ctx := nsCtx(t, "ns")
	if _, err := s.Prepare(ctx, "active", ""); err != nil {
		t.Fatal(err)
	}
	activeID := backendID(t, db, "ns", "active")

	reserve := func(r snapRecord) snapRecord {
		t.Helper()
		var err error
		if r.id, err = db.newBackendKey(); err != nil {
			t.Fatal(err)
		}
		r.pending = true
		if err := db.update(func(tx *bolt.Tx) error {
			if _, err := s.admit(t.Context(), tx, "ns", r, ""); err != nil {
				return err
			}
			return s.put(t.Context(), tx, "ns", r)
		}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Crashed before the backend call: nothing behind the record.
	lost := reserve(snapRecord{key: "lost", kind: snapshot.KindActive})
	// Crashed after the backend Prepare, before confirming.
	made := reserve(snapRecord{key: "made", kind: snapshot.KindActive})
	if _, err := backend.Prepare(ctx, made.id, ""); err != nil {
		t.Fatal(err)
	}
	// Crashed after the backend Commit, before confirming.
	done := reserve(snapRecord{key: "done", kind: snapshot.KindCommitted, commitFrom: "active"})
	if err := backend.Commit(ctx, done.id, activeID); err != nil {
		t.Fatal(err)
	}
	// Crashed after the backend Commit, before the one write of today's
	// Commit: the backend snapshot says where it comes from.
	if _, err := s.Prepare(ctx, "base-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "active2", "base"); err != nil {
		t.Fatal(err)
	}
	active2ID := backendID(t, db, "ns", "active2")
	done2ID, err := db.newBackendKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := backend.Commit(ctx, done2ID, active2ID, snapshot.WithLabels(map[string]string{
		"user": "x", LabelCommittedFrom: active2ID, LabelCommittedAs: "ns/done2"})); err != nil {
		t.Fatal(err)
	}
	// Pending records are invisible.
	if _, err := s.Stat(ctx, "made"); !errdefs.IsNotFound(err) {
		t.Fatalf("pending record visible: %v", err)
	}
	s.Close()
	db.Close()

	// Restart.
	db, err = Open(filepath.Join(dir, "meta.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = NewSnapshotter(db, "native", openNative(t, broot)).(*nsSnapshotter)
	defer s.Close()
	for _, tc := range []struct {
		key   string
		found bool
		kind  snapshot.Kind
	}{
		{"lost", false, 0},
		{"made", true, snapshot.KindActive},
		{"done", true, snapshot.KindCommitted},
		{"active", false, 0}, // committed as done
		{"done2", true, snapshot.KindCommitted},
		{"active2", false, 0}, // committed as done2
	} {
		info, err := s.Stat(ctx, tc.key)
		if tc.found && (err != nil || info.Kind != tc.kind) {
			t.Errorf("%s after recovery = %+v, %v", tc.key, info, err)
		}
		if !tc.found && !errdefs.IsNotFound(err) {
			t.Errorf("%s after recovery = %+v, %v; want NotFound", tc.key, info, err)
		}
	}
	if _, err := s.Mounts(ctx, "made"); err != nil {
		t.Errorf("mounts of recovered snapshot: %v", err)
	}
	if info, err := s.Stat(ctx, "done2"); err != nil || info.Parent != "base" || !maps.Equal(info.Labels, map[string]string{"user": "x"}) {
		t.Errorf("done2 after recovery = %+v, %v; want parent base, labels user=x", info, err)
	}
	if backendID(t, db, "ns", "done2") != done2ID {
		t.Errorf("done2 recorded with backend key %q, want %q", backendID(t, db, "ns", "done2"), done2ID)
	}
	if err := s.Remove(ctx, "base"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("remove of done2's parent: %v, want FailedPrecondition", err)
	}
	if _, err := s.Prepare(ctx, "on-done2", "done2"); err != nil {
		t.Errorf("prepare on done2: %v", err)
	}
	_ = lost
}

func TestSnapshotCleanupRemovesOrphans(t *testing.T) {
	db, s, backend := newSnapshotter(t)
	ctx := nsCtx(t, "ns")
	if _, err := s.Prepare(ctx, "kept", ""); err != nil {
		t.Fatal(err)
	}
	// Orphans: a chain the metadata never recorded (a crash between the
	// backend call and the record, or a failed backend Remove).
	if _, err := backend.Prepare(ctx, "orphan-base-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := backend.Commit(ctx, "orphan-base", "orphan-base-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Prepare(ctx, "orphan-child", "orphan-base"); err != nil {
		t.Fatal(err)
	}
	if err := s.(snapshot.Cleaner).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	var left []string
	backend.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		left = append(left, info.Name)
		return nil
	})
	if len(left) != 1 || left[0] != backendID(t, db, "ns", "kept") {
		t.Fatalf("backend holds %v after cleanup, want only kept's", left)
	}
	if _, err := s.Stat(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
}

// slowPrepare is a backend whose Prepare, once made, signals started and
// waits for release before it returns.
type slowPrepare struct {
	snapshot.Snapshotter
	started, release chan struct{}
}

func (s slowPrepare) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.Prepare(ctx, key, parent, opts...)
	close(s.started)
	<-s.release
	return ms, err
}

// TestSnapshotPrepareInFlight: while the backend makes a snapshot, no
// record names it, yet its key is taken, its parent can be neither removed
// nor collected, and its backend snapshot is no orphan; once made, it is
// recorded in one write transaction.
func TestSnapshotPrepareInFlight(t *testing.T) {
	db := newDB(t)
	native := openNative(t, t.TempDir())
	ctx := nsCtx(t, "ns")
	base := NewSnapshotter(db, "native", native)
	if _, err := base.Prepare(ctx, "base-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := base.Commit(ctx, "base", "base-a"); err != nil {
		t.Fatal(err)
	}
	slow := slowPrepare{Snapshotter: native, started: make(chan struct{}), release: make(chan struct{})}
	s := NewSnapshotter(db, "native", slow) // takes base's place as "native"
	t.Cleanup(func() { s.Close() })

	done := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, "child", "base")
		done <- err
	}()
	<-slow.started
	if _, err := s.Stat(ctx, "child"); !errdefs.IsNotFound(err) {
		t.Errorf("stat while being made: %v, want NotFound", err)
	}
	if _, err := s.Prepare(ctx, "child", ""); !errdefs.IsAlreadyExists(err) {
		t.Errorf("prepare of a key being made: %v, want AlreadyExists", err)
	}
	if err := s.Remove(ctx, "base"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("remove of the parent: %v, want FailedPrecondition", err)
	}
	rep, err := db.GarbageCollect(t.Context(), gc.Options{})
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("collect: %v %v", err, rep.Errors)
	}
	if _, err := s.Stat(ctx, "base"); err != nil {
		t.Errorf("the parent after a collection: %v", err)
	}
	close(slow.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The collection left the child's backend snapshot, made but not yet
	// recorded, alone.
	id := backendID(t, db, "ns", "child")
	if _, err := native.Stat(t.Context(), id); err != nil {
		t.Errorf("the child's backend snapshot %q: %v", id, err)
	}
	if _, err := s.Mounts(ctx, "child"); err != nil {
		t.Errorf("mounts of the child: %v", err)
	}
}

// lostAnswer is a backend whose Commit commits, then fails as a plugin
// that died before it answered.
type lostAnswer struct{ snapshot.Snapshotter }

func (l lostAnswer) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	if err := l.Snapshotter.Commit(ctx, name, key, opts...); err != nil {
		return err
	}
	return fmt.Errorf("plugin died: %w", errdefs.ErrUnavailable)
}

// TestSnapshotCommitAnswerLost: a commit the plugin made but did not
// answer is recorded by the next call, labels and parent kept.
func TestSnapshotCommitAnswerLost(t *testing.T) {
	db := newDB(t)
	native := openNative(t, t.TempDir())
	ctx := nsCtx(t, "ns")
	s := NewSnapshotter(db, "native", lostAnswer{native})
	t.Cleanup(func() { s.Close() })
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	err := s.Commit(ctx, "c", "a", snapshot.WithLabels(map[string]string{"k": "v"}))
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("commit: %v, want the plugin's Unavailable", err)
	}
	info, err := s.Stat(ctx, "c")
	if err != nil || info.Kind != snapshot.KindCommitted || !maps.Equal(info.Labels, map[string]string{"k": "v"}) {
		t.Errorf("stat of the commit the plugin made = %+v, %v", info, err)
	}
	if _, err := s.Stat(ctx, "a"); !errdefs.IsNotFound(err) {
		t.Errorf("stat of the active snapshot committed: %v, want NotFound", err)
	}
}

// gatedRemove is a backend whose Remove waits for release, records the
// keys it was called with and fails for those in fail.
type gatedRemove struct {
	snapshot.Snapshotter
	release chan struct{}
	mu      sync.Mutex
	removed []string
	fail    map[string]bool
}

func (g *gatedRemove) Remove(ctx context.Context, key string) error {
	<-g.release
	g.mu.Lock()
	g.removed = append(g.removed, key)
	fail := g.fail[key]
	g.mu.Unlock()
	if fail {
		return fmt.Errorf("remove %q: %w", key, errdefs.ErrUnavailable)
	}
	return g.Snapshotter.Remove(ctx, key)
}

// TestSnapshotRemoveInBackground: Remove deletes the record and returns;
// the backend snapshots go after it, in the order removed (a child before
// its parent), done once a settle returns; one the backend fails to
// remove, like one a crash left, is an orphan that Cleanup removes.
func TestSnapshotRemoveInBackground(t *testing.T) {
	db := newDB(t)
	native := openNative(t, t.TempDir())
	g := &gatedRemove{Snapshotter: native, release: make(chan struct{}), fail: map[string]bool{}}
	s := NewSnapshotter(db, "native", g)
	ctx := nsCtx(t, "ns")
	for _, step := range []func() error{
		func() error { _, err := s.Prepare(ctx, "base-a", ""); return err },
		func() error { return s.Commit(ctx, "base", "base-a") },
		func() error { _, err := s.Prepare(ctx, "child-a", "base"); return err },
		func() error { return s.Commit(ctx, "child", "child-a") },
		func() error { _, err := s.Prepare(ctx, "other", ""); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	base, child, other := backendID(t, db, "ns", "base"), backendID(t, db, "ns", "child"), backendID(t, db, "ns", "other")
	g.fail[other] = true

	// The backend's Remove is held: Remove returns all the same.
	for _, key := range []string{"child", "base", "other"} {
		if err := s.Remove(ctx, key); err != nil {
			t.Fatalf("remove %s: %v", key, err)
		}
		if _, err := s.Stat(ctx, key); !errdefs.IsNotFound(err) {
			t.Fatalf("stat %s after remove = %v, want NotFound", key, err)
		}
	}
	for _, id := range []string{child, base, other} {
		if _, err := native.Stat(ctx, id); err != nil {
			t.Fatalf("backend snapshot %s before its removal ran: %v", id, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.SettleSnapshotRemovals(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("settle while removals wait = %v, want context.Canceled", err)
	}

	close(g.release)
	if err := db.SettleSnapshotRemovals(ctx); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	order := slices.Clone(g.removed)
	g.mu.Unlock()
	if want := []string{child, base, other}; !slices.Equal(order, want) {
		t.Fatalf("backend removals %v, want %v (the order of the Removes)", order, want)
	}
	for _, id := range []string{child, base} {
		if _, err := native.Stat(ctx, id); !errdefs.IsNotFound(err) {
			t.Fatalf("backend snapshot %s after settle: %v, want NotFound", id, err)
		}
	}
	if _, err := native.Stat(ctx, other); err != nil {
		t.Fatalf("the snapshot the backend failed to remove: %v, want it left", err)
	}
	// Left as an orphan: Cleanup takes it.
	g.mu.Lock()
	delete(g.fail, other)
	g.mu.Unlock()
	if err := s.(snapshot.Cleaner).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := native.Stat(ctx, other); !errdefs.IsNotFound(err) {
		t.Fatalf("orphan after cleanup: %v", err)
	}
}
