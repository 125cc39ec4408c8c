package images

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/plugins/resolver-docker/docker"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// fetchFixture is a real registry holding one random blob of size n, a
// docker resolver reaching it and a content-local store.
func fetchFixture(t *testing.T, n int) (resolver.Resolver, content.Store, string, registry.Blob) {
	t.Helper()
	reg, err := registry.Start(t, registry.Options{})
	if errors.Is(err, registry.ErrNoRegistry) {
		testkit.SkipOrFail(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	data := make([]byte, n)
	rand.Read(data)
	b := registry.NewBlob(ocispec.MediaTypeImageLayer, data)
	if err := reg.PutBlob(ctx, "images/fetch", b); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{"host": map[string]any{reg.Host: reg.HostConfig()}})
	r, err := docker.New(ctx, sdk.Env{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cs, err := local.New(ctx, sdk.Env{Root: t.TempDir(), State: t.TempDir(), Config: json.RawMessage("{}")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return r, cs, reg.Host + "/images/fetch:any", b
}

// TestFetchResumes: a blob fetched whole, and one whose ingest already
// holds a part fetched from there on, land in the content store intact.
func TestFetchResumes(t *testing.T) {
	r, cs, ref, b := fetchFixture(t, 3<<20+5)
	ctx, data := t.Context(), b.Data

	// A part already there, as an interrupted fetch leaves it.
	w, err := cs.Writer(ctx, content.WithRef(IngestRef(b.Desc)), content.WithDescriptor(b.Desc))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data[:1<<20])
	w.Close()
	if err := Fetch(ctx, r, cs, ref, b.Desc); err != nil {
		t.Fatal(err)
	}
	got, err := content.ReadBlob(ctx, cs, b.Desc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored blob differs: %v", err)
	}
	// Stored: success without fetching.
	if err := Fetch(ctx, r, cs, ref, b.Desc); err != nil {
		t.Fatal(err)
	}
	// A blob the registry lacks.
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("none"), Size: 4}
	if err := Fetch(ctx, r, cs, ref, missing); err == nil {
		t.Fatal("fetch of a missing blob succeeded")
	}
}

// TestFetchConcurrent: fetches of one blob at once all succeed, one
// writing it and the others waiting for it, not failing on its lock.
func TestFetchConcurrent(t *testing.T) {
	r, cs, ref, b := fetchFixture(t, 8<<20)
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() { errs <- Fetch(t.Context(), r, cs, ref, b.Desc) }()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("concurrent fetch: %v", err)
		}
	}
	if got, err := content.ReadBlob(t.Context(), cs, b.Desc); err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("stored blob differs: %v", err)
	}
}

// TestFetchDiscardsWrongBytes: an ingest holding bytes that are not the
// blob (here written whole under the blob's ref) fails the fetch at commit
// and is discarded, so the next fetch succeeds from 0.
func TestFetchDiscardsWrongBytes(t *testing.T) {
	r, cs, ref, b := fetchFixture(t, 1<<20)
	ctx := t.Context()
	w, err := cs.Writer(ctx, content.WithRef(IngestRef(b.Desc)), content.WithDescriptor(b.Desc))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte{0}, int(b.Desc.Size)))
	w.Close()
	if err := Fetch(ctx, r, cs, ref, b.Desc); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("fetch onto wrong bytes: %v, want a failed precondition", err)
	}
	if st, err := cs.Status(ctx, IngestRef(b.Desc)); !errdefs.IsNotFound(err) {
		t.Fatalf("ingest of wrong bytes kept: %+v, %v", st, err)
	}
	if err := Fetch(ctx, r, cs, ref, b.Desc); err != nil {
		t.Fatalf("fetch after the wrong bytes: %v", err)
	}
}
