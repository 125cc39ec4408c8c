package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// store is keeld's metadata over a real local content store, in a
// namespace.
type store struct {
	db *metadata.DB
	cs content.Store
}

func newStore(t *testing.T) (context.Context, store) {
	t.Helper()
	ctx := scope.WithNamespace(t.Context(), "test")
	backend, err := local.New(ctx, sdk.Env{Root: t.TempDir(), State: t.TempDir(), Config: json.RawMessage("{}")})
	if err != nil {
		t.Fatal(err)
	}
	db, err := metadata.Open(filepath.Join(t.TempDir(), "meta.db"), metadata.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(); backend.Close() })
	return ctx, store{db: db, cs: metadata.NewContentStore(db, backend)}
}

func (s store) put(t *testing.T, ctx context.Context, mt string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, s.cs, "put-"+d.Digest.String(), bytes.NewReader(data), d); err != nil {
		t.Fatal(err)
	}
	return d
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func layerTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		tw.Write([]byte(data))
	}
	tw.Close()
	return buf.Bytes()
}

func gzipped(t testing.TB, data []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

// testImage stores a two-platform index (amd64, arm64) of one-layer
// images and returns it.
func testImage(t *testing.T, ctx context.Context, s store) (index ocispec.Descriptor, manifests []ocispec.Descriptor) {
	t.Helper()
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, arch := range []string{"amd64", "arm64"} {
		raw := layerTar(t, map[string]string{"arch": arch})
		layer := s.put(t, ctx, ocispec.MediaTypeImageLayerGzip, gzipped(t, raw))
		cfg := s.put(t, ctx, ocispec.MediaTypeImageConfig, mustJSON(t, ocispec.Image{
			Platform: ocispec.Platform{OS: "linux", Architecture: arch},
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(raw)}},
		}))
		m := s.put(t, ctx, ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: cfg, Layers: []ocispec.Descriptor{layer},
		}))
		m.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
		idx.Manifests = append(idx.Manifests, m)
	}
	return s.put(t, ctx, ocispec.MediaTypeImageIndex, mustJSON(t, idx)), idx.Manifests
}

// tarFiles lists a tar's files with their contents.
func tarFiles(t *testing.T, data []byte) (names []string, files map[string][]byte) {
	t.Helper()
	files = map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, files
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
}

// TestExportImportRoundTrip: an exported index is an OCI layout (the
// oci-layout file, every blob under blobs/sha256 with its digest,
// index.json naming the image), and importing it elsewhere gives the same
// target, the same blobs, the gc.ref labels and the record; exporting
// that again gives the same bytes.
func TestExportImportRoundTrip(t *testing.T) {
	ctx, src := newStore(t)
	index, manifests := testImage(t, ctx, src)
	const name = "example.com/app:v1"
	var out bytes.Buffer
	if err := Export(ctx, src.cs, &out, []Named{{Name: name, Target: index}}, ExportOptions{AllPlatforms: true}); err != nil {
		t.Fatal(err)
	}
	names, files := tarFiles(t, out.Bytes())
	if names[0] != "oci-layout" || names[len(names)-1] != "index.json" {
		t.Errorf("tar order: %v", names)
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout: %s", files["oci-layout"])
	}
	blobs := 0
	for n, b := range files {
		if strings.HasPrefix(n, "blobs/sha256/") && !strings.HasSuffix(n, "/") {
			blobs++
			if got := digest.FromBytes(b).Encoded(); got != strings.TrimPrefix(n, "blobs/sha256/") {
				t.Errorf("%s holds content of digest %s", n, got)
			}
		}
	}
	if blobs != 7 { // index, 2 × (manifest, config, layer)
		t.Errorf("%d blobs, want 7", blobs)
	}
	var idx ocispec.Index
	json.Unmarshal(files["index.json"], &idx)
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != index.Digest || idx.Manifests[0].Annotations[ocispec.AnnotationRefName] != name {
		t.Errorf("index.json: %s", files["index.json"])
	}

	ctx2, dst := newStore(t)
	imgs, err := Import(ctx2, dst.cs, dst.db.Images(), bytes.NewReader(out.Bytes()), ImportOptions{AllPlatforms: true, Leases: dst.db.Leases()})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != name || imgs[0].Target.Digest != index.Digest || imgs[0].Target.Annotations != nil {
		t.Fatalf("imported %+v", imgs)
	}
	info, err := dst.cs.Info(ctx2, index.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels[gc.LabelRefContent+".m.0"] != manifests[0].Digest.String() || info.Labels[gc.LabelRefContent+".m.1"] != manifests[1].Digest.String() {
		t.Errorf("index labels %v", info.Labels)
	}
	if leases, _ := dst.db.Leases().List(ctx2); len(leases) != 0 {
		t.Errorf("the import's lease is left: %v", leases)
	}
	var again bytes.Buffer
	if err := Export(ctx2, dst.cs, &again, []Named{{Name: imgs[0].Name, Target: imgs[0].Target}}, ExportOptions{AllPlatforms: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), out.Bytes()) {
		t.Error("export after import differs from the first export")
	}
}

// TestExportPlatforms: a manifest of an index missing from the store is
// left out by default and fails the export with AllPlatforms.
func TestExportPlatforms(t *testing.T) {
	ctx, s := newStore(t)
	index, manifests := testImage(t, ctx, s)
	if err := s.cs.Delete(ctx, manifests[1].Digest); err != nil {
		t.Fatal(err)
	}
	imgs := []Named{{Name: "x", Target: index}}
	var out bytes.Buffer
	if err := Export(ctx, s.cs, &out, imgs, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	_, files := tarFiles(t, out.Bytes())
	if _, ok := files[BlobPath(manifests[1].Digest)]; ok {
		t.Error("a manifest that is not stored was exported")
	}
	if _, ok := files[BlobPath(manifests[0].Digest)]; !ok {
		t.Error("the stored manifest was not exported")
	}
	if err := Export(ctx, s.cs, io.Discard, imgs, ExportOptions{AllPlatforms: true}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("export --all-platforms with a manifest missing: %v, want FailedPrecondition", err)
	}
}

// buildTar writes files (name → content; a "->" prefix makes a symlink)
// in order.
func buildTar(t testing.TB, files [][2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f[0], Mode: 0o644, Size: int64(len(f[1])), Typeflag: tar.TypeReg}
		if target, ok := strings.CutPrefix(f[1], "->"); ok {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, target, 0
		}
		if strings.HasSuffix(f[0], "/") {
			h.Typeflag, h.Size, h.Mode = tar.TypeDir, 0, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(f[1]))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// TestImportDockerSave: a legacy `docker save` tar (manifest.json,
// repositories, <id>/layer.tar, a symlinked duplicate layer) becomes a
// Docker schema2 manifest per entry, with the config's platform, layer
// media types from their bytes, normalized names, and labels.
// (The record keeps no platform: image records hold media type, digest,
// size and annotations.)
func TestImportDockerSave(t *testing.T) {
	ctx, s := newStore(t)
	l1 := layerTar(t, map[string]string{"a": "1"})
	l2 := gzipped(t, layerTar(t, map[string]string{"b": "2"}))
	l2raw := layerTar(t, map[string]string{"b": "2"})
	cfg := mustJSON(t, ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(l1), digest.FromBytes(l2raw), digest.FromBytes(l1)}},
	})
	cfgName := digest.FromBytes(cfg).Encoded() + ".json"
	mj := mustJSON(t, []dockerManifest{{
		Config:   cfgName,
		RepoTags: []string{"busybox:latest", "example.com/bb:v1"},
		Layers:   []string{"aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"},
	}})
	archive := buildTar(t, [][2]string{
		{"aaa/", ""}, {"aaa/VERSION", "1.0"}, {"aaa/json", "{}"}, {"aaa/layer.tar", string(l1)},
		{"bbb/", ""}, {"bbb/layer.tar", string(l2)},
		{"ccc/", ""}, {"ccc/layer.tar", "->../aaa/layer.tar"},
		{cfgName, string(cfg)},
		{"manifest.json", string(mj)},
		{"repositories", `{"busybox":{"latest":"ccc"}}`},
	})
	imgs, err := Import(ctx, s.cs, s.db.Images(), bytes.NewReader(archive), ImportOptions{Leases: s.db.Leases()})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Name != "docker.io/library/busybox:latest" || imgs[1].Name != "example.com/bb:v1" || imgs[0].Target.Digest != imgs[1].Target.Digest {
		t.Fatalf("imported %+v", imgs)
	}
	target := imgs[0].Target
	if target.MediaType != MediaTypeDockerManifest {
		t.Errorf("target %+v", target)
	}
	data, err := ReadBlob(ctx, s.cs, target)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	json.Unmarshal(data, &m)
	want := []struct {
		mt string
		d  digest.Digest
	}{{MediaTypeDockerLayer, digest.FromBytes(l1)}, {MediaTypeDockerLayerGzip, digest.FromBytes(l2)}, {MediaTypeDockerLayer, digest.FromBytes(l1)}}
	if m.MediaType != MediaTypeDockerManifest || m.Config.MediaType != MediaTypeDockerConfig || m.Config.Digest != digest.FromBytes(cfg) || len(m.Layers) != 3 {
		t.Fatalf("manifest %s", data)
	}
	for i, w := range want {
		if m.Layers[i].MediaType != w.mt || m.Layers[i].Digest != w.d {
			t.Errorf("layer %d: %+v, want %s %s", i, m.Layers[i], w.mt, w.d)
		}
	}
	info, _ := s.cs.Info(ctx, target.Digest)
	if info.Labels[gc.LabelRefContent+".config"] != m.Config.Digest.String() || info.Labels[gc.LabelRefContent+".l.1"] != m.Layers[1].Digest.String() {
		t.Errorf("manifest labels %v", info.Labels)
	}
}

// TestImportRefused: archives keel must refuse, each leaving no image
// record and no ingest.
func TestImportRefused(t *testing.T) {
	layout := `{"imageLayoutVersion":"1.0.0"}`
	good := []byte("good blob")
	for _, tc := range []struct {
		name    string
		archive [][2]string
		is      func(error) bool
	}{
		{"BlobDigestMismatch", [][2]string{
			{"oci-layout", layout},
			{BlobPath(digest.FromBytes(good)), string(good)},
			{BlobPath(digest.FromString("other")), "not other"},
			{"index.json", `{"schemaVersion":2,"manifests":[]}`},
		}, errdefs.IsInvalidArgument},
		{"BadBlobName", [][2]string{{"blobs/sha256/xyz", "x"}}, errdefs.IsInvalidArgument},
		{"NoIndex", [][2]string{{"something", "x"}}, errdefs.IsInvalidArgument},
		{"MissingManifest", [][2]string{
			{"oci-layout", layout},
			{"index.json", `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest.FromString("m").String() + `","size":1,"annotations":{"org.opencontainers.image.ref.name":"x:1"}}]}`},
		}, errdefs.IsFailedPrecondition},
		{"DockerLayerMissing", [][2]string{
			{"c.json", `{"rootfs":{"type":"layers","diff_ids":["` + digest.FromString("l").String() + `"]}}`},
			{"manifest.json", `[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]`},
		}, errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, s := newStore(t)
			_, err := Import(ctx, s.cs, s.db.Images(), bytes.NewReader(buildTar(t, tc.archive)), ImportOptions{Leases: s.db.Leases()})
			if !tc.is(err) {
				t.Fatalf("import: %v", err)
			}
			if imgs, _ := s.db.Images().List(ctx); len(imgs) != 0 {
				t.Errorf("records left: %v", imgs)
			}
			if sts, _ := s.cs.ListStatuses(ctx); len(sts) != 0 {
				t.Errorf("ingests left: %v", sts)
			}
			// What was stored is held by nothing now: GC frees it.
			if _, err := s.db.GarbageCollect(ctx, gc.Options{}); err != nil {
				t.Fatal(err)
			}
			var left []digest.Digest
			s.cs.Walk(ctx, func(i content.Info) error { left = append(left, i.Digest); return nil })
			if len(left) != 0 {
				t.Errorf("content left after gc: %v", left)
			}
		})
	}
}
