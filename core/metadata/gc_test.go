package metadata

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// gcFixture is a DB with a content-local and a native backend.
type gcFixture struct {
	root      string // of the content backend
	db        *DB
	cs        content.Store
	cback     content.Store
	sn, sback snapshot.Snapshotter
}

func newGCFixture(t *testing.T) *gcFixture {
	t.Helper()
	db := newDB(t)
	root := t.TempDir()
	cback, err := local.New(t.Context(), sdk.Env{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	f := &gcFixture{root: root, db: db, cback: cback, cs: NewContentStore(db, cback), sback: openNative(t, t.TempDir())}
	f.sn = NewSnapshotter(db, "native", f.sback)
	t.Cleanup(func() { f.cs.Close(); f.sn.Close() })
	return f
}

func (f *gcFixture) blob(t *testing.T, ctx context.Context, data string, labels map[string]string) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{Digest: digest.FromString(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, f.cs, "ref-"+desc.Digest.Encoded()[:8], bytes.NewReader([]byte(data)), desc, content.WithLabels(labels)); err != nil {
		t.Fatal(err)
	}
	return desc
}

func (f *gcFixture) committed(t *testing.T, ctx context.Context, name, parent string, labels map[string]string) {
	t.Helper()
	if _, err := f.sn.Prepare(ctx, name+"-active", parent); err != nil {
		t.Fatal(err)
	}
	if err := f.sn.Commit(ctx, name, name+"-active", snapshot.WithLabels(labels)); err != nil {
		t.Fatal(err)
	}
}

func (f *gcFixture) collect(t *testing.T, dry bool) gc.Report {
	t.Helper()
	rep, err := f.db.GarbageCollect(t.Context(), gc.Options{DryRun: dry})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("gc errors: %v", rep.Errors)
	}
	return rep
}

func names(objs []gc.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Namespace+":"+o.Name)
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string { slices.Sort(s); return s }

func ref(i int) string { return gc.LabelRefContent + ".l." + string(rune('0'+i)) }

// TestGarbageCollect: an image graph (manifest -> config, layer; config ->
// snapshot chain) is kept, the rest swept from metadata and backends;
// content another namespace holds stays in the backend.
func TestGarbageCollect(t *testing.T) {
	f := newGCFixture(t)
	a, b := nsCtx(t, "a"), nsCtx(t, "b")

	f.committed(t, a, "s0", "", nil)
	f.committed(t, a, "s1", "s0", nil)
	f.committed(t, a, "loose", "", nil)
	layer := f.blob(t, a, "layer", nil)
	cfg := f.blob(t, a, "config", map[string]string{gc.LabelRefSnapshotPrefix + "native": "s1"})
	man := f.blob(t, a, "manifest", map[string]string{gc.LabelRefContent + ".config": cfg.Digest.String(), ref(0): layer.Digest.String()})
	loose := f.blob(t, a, "loose", nil)
	shared := f.blob(t, a, "shared", nil)
	f.blob(t, b, "shared", map[string]string{gc.LabelRoot: "1"})
	if _, err := f.db.Images().Create(a, Image{Name: "img", Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: man.Digest, Size: man.Size}}); err != nil {
		t.Fatal(err)
	}

	dry := f.collect(t, true)
	wantRemoved := sorted("a:"+loose.Digest.String(), "a:"+shared.Digest.String(), "a:native/loose")
	if got := names(dry.Removed); !slices.Equal(got, wantRemoved) {
		t.Errorf("dry run removes %v, want %v", got, wantRemoved)
	}
	for _, k := range dry.Kept {
		want := "image img"
		if k.Namespace == "b" {
			want = "label " + gc.LabelRoot
		}
		if k.Root != want {
			t.Errorf("%s:%s kept by %q, want %q", k.Namespace, k.Name, k.Root, want)
		}
	}
	if len(dry.Kept) != 6 { // man, cfg, layer, s0, s1 in a; shared in b
		t.Errorf("dry run keeps %v", names(dry.Kept))
	}
	if _, err := f.cs.Info(a, loose.Digest); err != nil {
		t.Fatalf("dry run removed: %v", err)
	}

	rep := f.collect(t, false)
	if got := names(rep.Removed); !slices.Equal(got, wantRemoved) {
		t.Errorf("removed %v, want %v", got, wantRemoved)
	}
	if _, err := f.cback.Info(t.Context(), loose.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("loose blob in backend: %v", err)
	}
	if _, err := f.cback.Info(t.Context(), shared.Digest); err != nil {
		t.Errorf("blob b holds left the backend: %v", err)
	}
	if _, err := f.cs.Info(a, shared.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("a still has the shared blob: %v", err)
	}
	if _, err := f.sn.Stat(a, "loose"); !errdefs.IsNotFound(err) {
		t.Errorf("loose snapshot: %v", err)
	}
	n := 0
	f.sback.Walk(t.Context(), func(context.Context, snapshot.Info) error { n++; return nil })
	if n != 2 {
		t.Errorf("backend holds %d snapshots, want s0 and s1", n)
	}
	for _, d := range []digest.Digest{man.Digest, cfg.Digest, layer.Digest} {
		if _, err := f.cs.Info(a, d); err != nil {
			t.Errorf("image content %s: %v", d, err)
		}
	}
	if again := f.collect(t, false); len(again.Removed) != 0 {
		t.Errorf("second run removed %v", names(again.Removed))
	}

	// The image goes: everything of a goes, children before parents.
	if err := f.db.Images().Delete(a, "img"); err != nil {
		t.Fatal(err)
	}
	if rep := f.collect(t, false); len(rep.Removed) != 5 {
		t.Errorf("after image delete removed %v", names(rep.Removed))
	}
	n = 0
	f.sback.Walk(t.Context(), func(context.Context, snapshot.Info) error { n++; return nil })
	if n != 0 {
		t.Errorf("backend still holds %d snapshots", n)
	}
}

// TestGarbageCollectLeases: a lease keeps what was made under it (lease in
// ctx) and what was added to it, until it expires or is deleted.
func TestGarbageCollectLeases(t *testing.T) {
	f := newGCFixture(t)
	ctx := nsCtx(t, "ns")
	ls := f.db.Leases()
	if _, err := ls.Create(ctx, Lease{ID: "live"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Create(ctx, Lease{ID: "old", Labels: map[string]string{gc.LabelExpire: time.Now().Add(-time.Second).Format(time.RFC3339)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Create(ctx, Lease{ID: "live"}); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second create = %v, want AlreadyExists", err)
	}
	live, old := scope.WithLease(ctx, "live"), scope.WithLease(ctx, "old")
	held := f.blob(t, live, "held", nil)
	f.committed(t, live, "snap", "", nil)
	gone := f.blob(t, old, "gone", nil)
	added := f.blob(t, ctx, "added", nil)
	if err := ls.AddResource(ctx, "live", LeaseResource{ID: added.Digest.String(), Type: ResourceContent}); err != nil {
		t.Fatal(err)
	}
	if err := ls.AddResource(ctx, "nope", LeaseResource{ID: added.Digest.String(), Type: ResourceContent}); !errdefs.IsNotFound(err) {
		t.Fatalf("add to a missing lease = %v, want NotFound", err)
	}
	if err := ls.AddResource(ctx, "live", LeaseResource{ID: "x", Type: "blobs"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad type = %v, want InvalidArgument", err)
	}
	// A lease that does not exist refuses the work.
	if _, err := f.sn.Prepare(scope.WithLease(ctx, "nope"), "x", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("prepare under a missing lease = %v, want NotFound", err)
	}

	res, err := ls.ListResources(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		got = append(got, r.Type+" "+r.ID)
	}
	slices.Sort(got)
	want := []string{
		"content " + added.Digest.String(), "content " + held.Digest.String(),
		"ingests ref-" + held.Digest.Encoded()[:8],
		"snapshots/native snap", "snapshots/native snap-active",
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("resources %v, want %v", got, want)
	}

	rep := f.collect(t, false)
	if got, want := names(rep.Removed), sorted("ns:"+gone.Digest.String(), "ns:old"); !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	if l, _ := ls.List(ctx); len(l) != 1 || l[0].ID != "live" {
		t.Errorf("leases after gc: %v", l)
	}
	if l, _ := ls.List(ctx, "id==nope"); len(l) != 0 {
		t.Errorf("filtered list: %v", l)
	}

	if err := ls.DeleteResource(ctx, "live", LeaseResource{ID: added.Digest.String(), Type: ResourceContent}); err != nil {
		t.Fatal(err)
	}
	if got := names(f.collect(t, false).Removed); !slices.Equal(got, []string{"ns:" + added.Digest.String()}) {
		t.Errorf("after DeleteResource removed %v", got)
	}
	if err := ls.Delete(ctx, "live"); err != nil {
		t.Fatal(err)
	}
	if got := names(f.collect(t, false).Removed); len(got) != 2 {
		t.Errorf("after lease delete removed %v, want the blob and the snapshot", got)
	}
}

// TestGarbageCollectStatLeases: a snapshot found by a Stat under a lease
// is the lease's from that Stat on (a pull skipping a layer unpacked
// already keeps it through a collection before its image is recorded); a
// Stat without a lease holds nothing.
func TestGarbageCollectStatLeases(t *testing.T) {
	f := newGCFixture(t)
	ctx := nsCtx(t, "ns")
	f.committed(t, ctx, "found", "", nil)
	f.committed(t, ctx, "looked-at", "", nil)
	if _, err := f.db.Leases().Create(ctx, Lease{ID: "pull"}); err != nil {
		t.Fatal(err)
	}
	pull := scope.WithLease(ctx, "pull")
	if info, err := f.sn.Stat(pull, "found"); err != nil || info.Kind != snapshot.KindCommitted {
		t.Fatalf("stat under the lease = %v, %v", info, err)
	}
	if _, err := f.sn.Stat(ctx, "looked-at"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sn.Stat(pull, "missing"); !errdefs.IsNotFound(err) {
		t.Fatalf("stat of a missing snapshot under the lease = %v, want NotFound", err)
	}
	if _, err := f.sn.Stat(scope.WithLease(ctx, "nope"), "found"); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("stat under a missing lease = %v, want the lease NotFound", err)
	}
	removed := names(f.collect(t, false).Removed)
	if !slices.Contains(removed, "ns:native/looked-at") || slices.Contains(removed, "ns:native/found") {
		t.Errorf("removed %v, want looked-at and not found", removed)
	}
	if _, err := f.sn.Stat(ctx, "found"); err != nil {
		t.Errorf("the leased snapshot after the collection: %v", err)
	}
	if err := f.db.Leases().Delete(ctx, "pull"); err != nil {
		t.Fatal(err)
	}
	if removed := names(f.collect(t, false).Removed); !slices.Contains(removed, "ns:native/found") {
		t.Errorf("once the lease is gone removed %v, want found", removed)
	}
}

// TestGarbageCollectHeldLease: a lease past its expiry that an operation
// of this process still holds (a slow pull) keeps its content; released,
// it goes with what only it held.
func TestGarbageCollectHeldLease(t *testing.T) {
	f := newGCFixture(t)
	ctx := nsCtx(t, "ns")
	ls := f.db.Leases()
	if _, err := ls.Create(ctx, Lease{ID: "slow", Labels: map[string]string{gc.LabelExpire: time.Now().Add(-time.Second).Format(time.RFC3339)}}); err != nil {
		t.Fatal(err)
	}
	release, err := ls.Hold(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	// The same id held in another namespace does not count.
	if _, err := ls.Create(nsCtx(t, "other"), Lease{ID: "slow", Labels: map[string]string{gc.LabelExpire: time.Now().Add(-time.Second).Format(time.RFC3339)}}); err != nil {
		t.Fatal(err)
	}
	blob := f.blob(t, scope.WithLease(ctx, "slow"), "in flight", nil)
	if got := names(f.collect(t, false).Removed); !slices.Equal(got, []string{"other:slow"}) {
		t.Errorf("removed while held: %v, want only the other namespace's lease", got)
	}
	release()
	release() // a second release is harmless
	if got, want := names(f.collect(t, false).Removed), sorted("ns:"+blob.Digest.String(), "ns:slow"); !slices.Equal(got, want) {
		t.Errorf("removed once released: %v, want %v", got, want)
	}
}

// TestGarbageCollectOrphans: backend objects no metadata names (a crash
// between the phases) are listed on a dry run and removed on a real one.
func TestGarbageCollectOrphans(t *testing.T) {
	f := newGCFixture(t)
	ctx := t.Context()
	data := []byte("orphan")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, f.cback, "x", bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sback.Prepare(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.sback.Commit(ctx, "parent", "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sback.Prepare(ctx, "child", "parent"); err != nil {
		t.Fatal(err)
	}
	want := sorted(":"+desc.Digest.String(), ":native/child", ":native/parent")
	if got := names(f.collect(t, true).Removed); !slices.Equal(got, want) {
		t.Errorf("dry run orphans %v, want %v", got, want)
	}
	if got := names(f.collect(t, false).Removed); !slices.Equal(got, want) {
		t.Errorf("removed orphans %v, want %v", got, want)
	}
	if _, err := f.cback.Info(ctx, desc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("orphan blob: %v", err)
	}
	if _, err := f.sback.Stat(ctx, "parent"); !errdefs.IsNotFound(err) {
		t.Errorf("orphan snapshot: %v", err)
	}
}

func TestImages(t *testing.T) {
	db := newDB(t)
	ctx, other := nsCtx(t, "ns"), nsCtx(t, "other")
	s := db.Images()
	target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 1}
	triggered := 0
	db.SetGCTrigger(func() { triggered++ })

	for _, bad := range []Image{
		{Name: "", Target: target},
		{Name: "x", Target: ocispec.Descriptor{MediaType: "m", Digest: "sha256:nope"}},
		{Name: "x", Target: ocispec.Descriptor{Digest: target.Digest}},
	} {
		if _, err := s.Create(ctx, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("create %+v = %v, want InvalidArgument", bad, err)
		}
	}
	annotated := target
	annotated.Annotations = map[string]string{"org.opencontainers.image.ref.name": "1"}
	img, err := s.Create(ctx, Image{Name: "a:1", Target: annotated, Labels: map[string]string{"k": "v", "gone": ""}})
	if err != nil {
		t.Fatal(err)
	}
	if img.CreatedAt.IsZero() || img.Target.Digest != target.Digest {
		t.Errorf("created %+v", img)
	}
	if _, err := s.Create(ctx, Image{Name: "a:1", Target: target}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second create = %v, want AlreadyExists", err)
	}
	if _, err := s.Get(other, "a:1"); !errdefs.IsNotFound(err) {
		t.Errorf("get from another namespace = %v, want NotFound", err)
	}
	if _, err := s.Create(ctx, Image{Name: "b:1", Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("i"), Size: 2}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		filter string
		want   []string
	}{
		{"", []string{"a:1", "b:1"}},
		{"name==a:1", []string{"a:1"}},
		{"labels.k==v", []string{"a:1"}},
		{"target.digest==" + target.Digest.String(), []string{"a:1"}},
		{`target.mediatype~=/index/`, []string{"b:1"}},
		{`annotations."org.opencontainers.image.ref.name"==1`, []string{"a:1"}},
		{"annotations.org.opencontainers.image.ref.name", []string{"a:1"}},
		{"target", nil},
		{`labels.k!=""`, []string{"a:1"}},
		{"labels.gone", nil}, // an empty value is not stored
		{"labels.k!=v", []string{"b:1"}},
	} {
		var fs []string
		if c.filter != "" {
			fs = []string{c.filter}
		}
		list, err := s.List(ctx, fs...)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, i := range list {
			got = append(got, i.Name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("list %q = %v, want %v", c.filter, got, c.want)
		}
	}

	next := target
	next.Digest = digest.FromString("m2")
	up, err := s.Update(ctx, Image{Name: "a:1", Labels: map[string]string{"n": "1"}}, "labels.n")
	if err != nil {
		t.Fatal(err)
	}
	if up.Labels["k"] != "v" || up.Labels["n"] != "1" || up.Target.Digest != target.Digest || triggered != 0 {
		t.Errorf("label update: %+v, triggered %d", up, triggered)
	}
	if up, err = s.Update(ctx, Image{Name: "a:1", Target: next}, "target"); err != nil || up.Target.Digest != next.Digest || triggered != 1 {
		t.Errorf("target update: %+v %v, triggered %d", up, err, triggered)
	}
	if _, err := s.Update(ctx, Image{Name: "a:1"}, "name"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("update name = %v, want InvalidArgument", err)
	}
	if _, err := s.Update(ctx, Image{Name: "zz", Target: next}); !errdefs.IsNotFound(err) {
		t.Errorf("update missing = %v, want NotFound", err)
	}
	if err := s.Delete(ctx, "a:1"); err != nil || triggered != 2 {
		t.Errorf("delete: %v, triggered %d", err, triggered)
	}
	if err := s.Delete(ctx, "a:1"); !errdefs.IsNotFound(err) {
		t.Errorf("second delete = %v, want NotFound", err)
	}
}

// partial leaves an ingest of n bytes under ref, its writer closed, last
// written age ago.
func (f *gcFixture) partial(t *testing.T, ctx context.Context, ref string, n int, age time.Duration) {
	t.Helper()
	w, err := f.cs.Writer(ctx, content.WithRef(ref))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte("x"), n)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if age > 0 {
		ns, _ := scope.Namespace(ctx)
		sum := sha256.Sum256([]byte(backendRef(ns, ref)))
		data := filepath.Join(f.root, "ingest", hex.EncodeToString(sum[:]), "data")
		then := time.Now().Add(-age)
		if err := os.Chtimes(data, then, then); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(filepath.Dir(data), "updatedat"))
	}
}

// TestGarbageCollectIngests: partial ingests go once idle for the max age,
// or at once with Ingests, unless a writer holds them open or a live (or
// held) lease lists them; orphans of the backend follow the same rule.
func TestGarbageCollectIngests(t *testing.T) {
	f := newGCFixture(t)
	ctx := nsCtx(t, "ns")
	ls := f.db.Leases()
	if _, err := ls.Create(ctx, Lease{ID: "live"}); err != nil {
		t.Fatal(err)
	}
	expiry := map[string]string{gc.LabelExpire: time.Now().Add(-time.Second).Format(time.RFC3339)}
	for _, id := range []string{"expired", "held"} {
		if _, err := ls.Create(ctx, Lease{ID: id, Labels: expiry}); err != nil {
			t.Fatal(err)
		}
	}
	release, err := ls.Hold(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	f.partial(t, ctx, "old", 100, 48*time.Hour)
	f.partial(t, ctx, "young", 200, 0)
	f.partial(t, scope.WithLease(ctx, "live"), "leased", 300, 48*time.Hour)
	f.partial(t, scope.WithLease(ctx, "expired"), "expired-lease", 400, 48*time.Hour)
	f.partial(t, scope.WithLease(ctx, "held"), "held-lease", 500, 48*time.Hour)
	open, err := f.cs.Writer(ctx, content.WithRef("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	open.Write([]byte("being written"))
	ow, err := f.cback.Writer(t.Context(), content.WithRef("gone-ns/orphan"))
	if err != nil {
		t.Fatal(err)
	}
	ow.Write([]byte("orphan"))
	ow.Close()

	collect := func(opts gc.Options) gc.Report {
		t.Helper()
		rep, err := f.db.GarbageCollect(t.Context(), opts)
		if err != nil || len(rep.Errors) > 0 {
			t.Fatalf("gc: %v %v", err, rep.Errors)
		}
		return rep
	}
	ingests := func(objs []gc.Object) map[string]string {
		out := map[string]string{}
		for _, o := range objs {
			if o.Kind == gc.KindIngest {
				out[o.Namespace+":"+o.Name] = o.Reason + o.Root
			}
		}
		return out
	}
	day := 24 * time.Hour

	dry := collect(gc.Options{DryRun: true, IngestMaxAge: day})
	removed, kept := ingests(dry.Removed), ingests(dry.Kept)
	for _, c := range []struct {
		name string
		gone bool
		why  string
	}{
		{"ns:old", true, "untouched for 48h"},
		{"ns:expired-lease", true, "untouched"},
		{"ns:young", false, "ingest_max_age"},
		{"ns:leased", false, "lease live"},
		{"ns:held-lease", false, "lease held"},
		{"ns:open", false, "a running writer"},
		{":gone-ns/orphan", false, "ingest_max_age"},
	} {
		why, gone := removed[c.name]
		if !gone {
			why = kept[c.name]
		}
		if gone != c.gone || !strings.Contains(why, c.why) {
			t.Errorf("dry run: %s removed %v (%q), want %v (%q)", c.name, gone, why, c.gone, c.why)
		}
	}
	if sts, _ := f.cback.ListStatuses(t.Context()); len(sts) != 7 {
		t.Errorf("a dry run removed ingests: %d left", len(sts))
	}
	// DB.Ingests and gc.CollectIngest decide as the collection did.
	list, err := f.db.Ingests(t.Context())
	if err != nil || len(list) != 7 {
		t.Fatalf("Ingests: %d, %v; want 7", len(list), err)
	}
	for _, in := range list {
		remove, _ := gc.CollectIngest(in, time.Now(), gc.Options{IngestMaxAge: day})
		if _, gone := removed[in.Namespace+":"+in.Ref]; gone != remove {
			t.Errorf("CollectIngest(%+v) = %v, the collection removed it: %v", in, remove, gone)
		}
	}

	// At once: all but the held ones, orphan included; bytes freed.
	rep := collect(gc.Options{Ingests: true, IngestMaxAge: day})
	want := sorted("ns:old", "ns:expired-lease", "ns:young", ":gone-ns/orphan")
	if got := slices.Sorted(maps.Keys(ingests(rep.Removed))); !slices.Equal(got, want) {
		t.Errorf("--ingests removed %v, want %v", got, want)
	}
	var left []string
	sts, err := f.cs.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		left = append(left, st.Ref)
	}
	slices.Sort(left)
	if want := sorted("held-lease", "leased", "open"); !slices.Equal(left, want) {
		t.Errorf("ingests left %v, want %v", left, want)
	}
	if sts, _ := f.cback.ListStatuses(t.Context()); len(sts) != 3 {
		t.Errorf("backend keeps %d ingests, want 3", len(sts))
	}
	// The open writer still commits.
	if err := open.Commit(ctx, 0, ""); err != nil {
		t.Errorf("commit of the writer kept open: %v", err)
	}
}
