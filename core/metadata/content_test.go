package metadata

// These tests import the content-local plugin package: test code only.

import (
	"bytes"
	"context"
	"maps"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

func newContent(t *testing.T) (*DB, content.Store, content.Store) {
	t.Helper()
	db := newDB(t)
	backend, err := local.New(t.Context(), sdk.Env{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := NewContentStore(db, backend)
	t.Cleanup(func() { s.Close() })
	return db, s, backend
}

func blobDesc(data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
}

func TestContentNamespaceIsolation(t *testing.T) {
	db, s, backend := newContent(t)
	a, b := nsCtx(t, "a"), nsCtx(t, "b")
	data := []byte("hello, keel")
	desc := blobDesc(data)

	if err := content.WriteBlob(a, s, "ref", bytes.NewReader(data), desc, content.WithLabels(map[string]string{"k": "a"})); err != nil {
		t.Fatal(err)
	}
	// b does not see a's blob, though the backend has it.
	if _, err := backend.Info(t.Context(), desc.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info(b, desc.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("b info = %v, want NotFound", err)
	}
	if _, err := s.ReaderAt(b, desc); !errdefs.IsNotFound(err) {
		t.Fatalf("b reader = %v, want NotFound", err)
	}
	if _, err := s.Update(b, content.Info{Digest: desc.Digest}); !errdefs.IsNotFound(err) {
		t.Fatalf("b update = %v, want NotFound", err)
	}
	if err := s.Delete(b, desc.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("b delete = %v, want NotFound", err)
	}
	n := 0
	s.Walk(b, func(content.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("b walks %d blobs", n)
	}

	// A writer in b must still send every byte, then b has it too.
	w, err := s.Writer(b, content.WithRef("ref"), content.WithDescriptor(desc))
	if err != nil {
		t.Fatalf("b writer for a blob only a has: %v", err)
	}
	if err := w.Commit(b, desc.Size, desc.Digest); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("commit without the bytes = %v, want FailedPrecondition", err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(b, desc.Size, desc.Digest, content.WithLabels(map[string]string{"k": "b"})); err != nil {
		t.Fatalf("commit of a blob the backend has: %v", err)
	}
	w.Close()
	for ns, ctx := range map[string]context.Context{"a": a, "b": b} {
		info, err := s.Info(ctx, desc.Digest)
		if err != nil || info.Size != desc.Size || info.Labels["k"] != ns {
			t.Fatalf("%s info = %+v, %v", ns, info, err)
		}
		got, err := content.ReadBlob(ctx, s, desc)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s read = %q, %v", ns, got, err)
		}
	}

	// Now b has it: a new writer naming it is AlreadyExists.
	if _, err := s.Writer(b, content.WithRef("again"), content.WithDescriptor(desc)); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("writer for a blob b has = %v, want AlreadyExists", err)
	}
	if err := db.Namespaces().Delete(t.Context(), "a"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete namespace holding content = %v", err)
	}

	// Deleting in a keeps the backend blob for b; deleting in b too drops it.
	if err := s.Delete(a, desc.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info(a, desc.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("a info after delete = %v", err)
	}
	if _, err := content.ReadBlob(b, s, desc); err != nil {
		t.Fatalf("b read after a's delete: %v", err)
	}
	if err := s.Delete(b, desc.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Info(t.Context(), desc.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("backend info after last delete = %v, want NotFound", err)
	}
	if err := db.Namespaces().Delete(t.Context(), "a"); err != nil {
		t.Fatalf("delete emptied namespace: %v", err)
	}
}

func TestContentIngestsPerNamespace(t *testing.T) {
	_, s, _ := newContent(t)
	a, b := nsCtx(t, "a"), nsCtx(t, "b")
	// The same ref in two namespaces: two ingests, no lock conflict.
	wa, err := s.Writer(a, content.WithRef("layer"))
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	wb, err := s.Writer(b, content.WithRef("layer"))
	if err != nil {
		t.Fatalf("same ref in another namespace: %v", err)
	}
	defer wb.Close()
	// The same ref in the same namespace is held.
	if _, err := s.Writer(a, content.WithRef("layer")); !errdefs.IsUnavailable(err) {
		t.Fatalf("second writer on a held ref = %v, want Unavailable", err)
	}
	wa.Write([]byte("aaa"))
	wb.Write([]byte("b"))
	for _, tc := range []struct {
		ctx    context.Context
		offset int64
	}{{a, 3}, {b, 1}} {
		st, err := s.Status(tc.ctx, "layer")
		if err != nil || st.Ref != "layer" || st.Offset != tc.offset {
			t.Fatalf("status = %+v, %v; want offset %d", st, err, tc.offset)
		}
		sts, err := s.ListStatuses(tc.ctx)
		if err != nil || len(sts) != 1 || sts[0].Ref != "layer" || sts[0].Offset != tc.offset {
			t.Fatalf("list statuses = %+v, %v", sts, err)
		}
		if sts, _ := s.ListStatuses(tc.ctx, "ref==other"); len(sts) != 0 {
			t.Fatalf("filtered list statuses = %+v", sts)
		}
	}
	if st, err := wa.Status(); err != nil || st.Ref != "layer" {
		t.Fatalf("writer status = %+v, %v", st, err)
	}
	if _, err := s.Status(nsCtx(t, "c"), "layer"); !errdefs.IsNotFound(err) {
		t.Fatalf("status in a third namespace = %v", err)
	}

	// Abort is namespaced: a's abort leaves b's ingest.
	if err := s.Abort(a, "layer"); !errdefs.IsUnavailable(err) {
		t.Fatalf("abort of a held ref = %v, want Unavailable", err)
	}
	wa.Close()
	if err := s.Abort(a, "layer"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(a, "layer"); !errdefs.IsNotFound(err) {
		t.Fatalf("status after abort = %v", err)
	}
	if err := s.Abort(a, "layer"); !errdefs.IsNotFound(err) {
		t.Fatalf("abort twice = %v", err)
	}
	if st, err := s.Status(b, "layer"); err != nil || st.Offset != 1 {
		t.Fatalf("b status after a's abort = %+v, %v", st, err)
	}

	// Resume after the writer is gone, then commit.
	wb.Close()
	data := []byte("blob")
	if err := content.WriteBlob(b, s, "layer", bytes.NewReader(data), blobDesc(data)); err != nil {
		t.Fatalf("resumed write: %v", err)
	}
	if sts, _ := s.ListStatuses(b); len(sts) != 0 {
		t.Fatalf("ingests after commit: %+v", sts)
	}
	if _, err := s.Info(b, digest.FromBytes(data)); err != nil {
		t.Fatal(err)
	}
}

func TestContentUpdateAndWalk(t *testing.T) {
	_, s, _ := newContent(t)
	ctx := nsCtx(t, "ns")
	one, two := []byte("one"), []byte("two!")
	for _, d := range [][]byte{one, two} {
		if err := content.WriteBlob(ctx, s, string(d), bytes.NewReader(d), blobDesc(d), content.WithLabels(map[string]string{"name": string(d)})); err != nil {
			t.Fatal(err)
		}
	}
	info, err := s.Update(ctx, content.Info{Digest: digest.FromBytes(one), Labels: map[string]string{"gc": "x"}}, "labels.gc")
	if err != nil || !maps.Equal(info.Labels, map[string]string{"name": "one", "gc": "x"}) {
		t.Fatalf("update = %+v, %v", info, err)
	}
	if _, err := s.Update(ctx, content.Info{Digest: digest.FromBytes(one)}, "size"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("update size = %v", err)
	}
	for _, tc := range []struct {
		filters []string
		want    int
	}{
		{nil, 2},
		{[]string{"labels.gc"}, 1},
		{[]string{"size==4"}, 1},
		{[]string{"labels.name==one", "labels.name==two!"}, 2},
		{[]string{"digest==" + digest.FromBytes(two).String()}, 1},
	} {
		n := 0
		if err := s.Walk(ctx, func(content.Info) error { n++; return nil }, tc.filters...); err != nil {
			t.Fatal(err)
		}
		if n != tc.want {
			t.Errorf("walk %q: %d blobs, want %d", tc.filters, n, tc.want)
		}
	}
	if _, err := s.Info(context.Background(), digest.FromBytes(one)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("info without namespace = %v, want InvalidArgument", err)
	}
}

// TestContentCommitHeldDropsIngest: a writer opened without a descriptor
// may send a blob the namespace holds already; its Commit is
// AlreadyExists, and its ingest is gone all the same (keel check found
// such a record left, the backend's ingest having been spent).
func TestContentCommitHeldDropsIngest(t *testing.T) {
	db, s, _ := newContent(t)
	ctx := nsCtx(t, "a")
	data := []byte("held already")
	desc := blobDesc(data)
	if err := content.WriteBlob(ctx, s, "first", bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	w, err := s.Writer(ctx, content.WithRef("second"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("commit of a held blob = %v, want AlreadyExists", err)
	}
	sts, err := s.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 0 {
		t.Fatalf("ingests left after the commit: %+v", sts)
	}
	if _, err := s.Status(ctx, "second"); !errdefs.IsNotFound(err) {
		t.Fatalf("status of the committed ingest = %v, want NotFound", err)
	}
	recs, err := db.IngestRecords(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Fatalf("ingest records left after the commit: %+v", recs)
	}
}
