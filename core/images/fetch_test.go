package images

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/plugins/resolver-docker/docker"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/test/conformance/registry"
)

// TestFetchResumes: a blob fetched whole, and one whose ingest already
// holds a part fetched from there on, land in the content store intact.
func TestFetchResumes(t *testing.T) {
	reg, err := registry.Start(t, registry.Options{})
	if errors.Is(err, registry.ErrNoRegistry) && os.Getenv("KEEL_TEST_STRICT") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	data := make([]byte, 3<<20+5)
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
	defer r.Close()
	cs, err := local.New(ctx, sdk.Env{Root: t.TempDir(), State: t.TempDir(), Config: json.RawMessage("{}")})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ref := reg.Host + "/images/fetch:any"

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
