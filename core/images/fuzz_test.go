package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// The fuzz targets of this package. Each adds its seeds with f.Add; the
// real-world ones are committed under testdata/fuzz/<target>/, which plain
// go test runs too. make fuzz runs each target for a while.

// FuzzNormalizeName: a name NormalizeName changes normalizes to a fully
// qualified reference, with a registry host, that parses (strictly) to
// itself and normalizes to itself, and names the same repository and
// digest as distribution's ParseDockerRef (which, unlike keel, drops the
// tag of tag@digest). A name it keeps is a normalized one, or not a
// reference (an import's base name).
func FuzzNormalizeName(f *testing.F) {
	for _, s := range []string{
		"busybox", "busybox:1.36", "library/busybox", "docker.io/library/busybox:latest",
		"127.0.0.1:5000/demo/busybox:v1", "localhost/app", "example.com/app:v1@" + digest.FromString("x").String(),
		"import@" + digest.FromString("x").String(), "", "UPPER", "a:b:c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := NormalizeName(s)
		if n == s {
			return
		}
		strict, err := reference.ParseNamed(n)
		if err != nil {
			t.Fatalf("NormalizeName(%q) = %q, which does not parse as a full reference: %v", s, n, err)
		}
		if strict.String() != n || reference.Domain(strict) == "" {
			t.Fatalf("NormalizeName(%q) = %q, which parses to %q, registry %q", s, n, strict, reference.Domain(strict))
		}
		if again := NormalizeName(n); again != n {
			t.Fatalf("NormalizeName(%q) = %q, then %q", s, n, again)
		}
		ref, err := reference.ParseDockerRef(s)
		if err != nil {
			t.Fatalf("NormalizeName(%q) = %q, ParseDockerRef refuses it: %v", s, n, err)
		}
		if ref.Name() != strict.Name() || digestOf(ref) != digestOf(strict) {
			t.Fatalf("NormalizeName(%q) = %q, ParseDockerRef gives %q", s, n, ref)
		}
		if digestOf(ref) == "" && ref.String() != n {
			t.Fatalf("NormalizeName(%q) = %q, ParseDockerRef gives %q", s, n, ref)
		}
	})
}

func digestOf(n reference.Named) digest.Digest {
	if d, ok := n.(reference.Digested); ok {
		return d.Digest()
	}
	return ""
}

// maxPlatformAlloc bounds what ParsePlatform may allocate for a platform
// string: linux/arm/v8 takes a few hundred bytes; the cap is for the
// strings that size work (a variant of v3000000 once took a gigabyte).
const maxPlatformAlloc = 1 << 20

// FuzzParsePlatform: ParsePlatform takes only what containerd's
// platforms.Parse takes (refusing more with InvalidArgument), its matcher
// matches the platform it was given, its os/arch/variant formats to a
// string that parses back to it, and parsing allocates a bounded amount.
func FuzzParsePlatform(f *testing.F) {
	for _, s := range []string{
		"linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux", "arm64", "windows/amd64", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := ParsePlatform(s)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > maxPlatformAlloc {
			t.Fatalf("ParsePlatform(%q) allocated %d bytes", s, n)
		}
		p, perr := platforms.Parse(s)
		switch {
		case err != nil && !errdefs.IsInvalidArgument(err):
			t.Fatalf("ParsePlatform(%q): %v, want InvalidArgument", s, err)
		case err != nil:
			return
		case perr != nil:
			t.Fatalf("ParsePlatform(%q) takes what platforms.Parse refuses: %v", s, perr)
		}
		norm := platforms.Normalize(p)
		if !m.Match(norm) {
			t.Fatalf("ParsePlatform(%q) does not match %+v", s, norm)
		}
		// Format, as keel prints platforms: FormatAll does not re-escape an
		// os version's %-escapes (windows(1.%82)), containerd's own quirk.
		back, err := platforms.Parse(platforms.Format(norm))
		if err != nil {
			t.Fatalf("%q: %+v formats to %q, which does not parse: %v", s, norm, platforms.Format(norm), err)
		}
		if back = platforms.Normalize(back); back.OS != norm.OS || back.Architecture != norm.Architecture || back.Variant != norm.Variant {
			t.Fatalf("%q: %+v formats to %q, which parses to %+v", s, norm, platforms.Format(norm), back)
		}
	})
}

// memBlobs is a content.Provider of blobs held in memory.
type memBlobs map[digest.Digest][]byte

func (m memBlobs) ReaderAt(_ context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	b, ok := m[desc.Digest]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	return memReaderAt{bytes.NewReader(b)}, nil
}

type memReaderAt struct{ *bytes.Reader }

func (memReaderAt) Close() error { return nil }

// graphMediaTypes are what a fuzzed target descriptor may say it is.
var graphMediaTypes = []string{
	ocispec.MediaTypeImageIndex, MediaTypeDockerManifestList,
	ocispec.MediaTypeImageManifest, MediaTypeDockerManifest,
	ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip, "",
}

// FuzzManifestGraph feeds three JSON blobs to the graph walking: top is
// the target (its media type picked by mt), mid and leaf are blobs it may
// refer to, by writing "@mid" or "@leaf" where a digest goes (mid may
// refer to leaf, leaf to nothing). Children, ChildLabels, Manifest,
// ChainID and SelectManifests must not panic, must classify their errors,
// and what they return must hold together.
func FuzzManifestGraph(f *testing.F) {
	config := mustMarshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromString("layer")}},
	})
	manifest := mustMarshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: "@leaf", Size: int64(len(config))},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("gz"), Size: 2}},
	})
	index := mustMarshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{
			{MediaType: ocispec.MediaTypeImageManifest, Digest: "@mid", Size: int64(len(manifest)), Platform: &ocispec.Platform{OS: "linux", Architecture: "s390x"}},
			{MediaType: ocispec.MediaTypeImageManifest, Digest: "@mid", Size: int64(len(manifest)), Platform: &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}},
		},
	})
	f.Add(uint8(0), index, manifest, config)
	f.Add(uint8(2), manifest, config, []byte("{}"))
	f.Add(uint8(3), manifest, config, []byte(nil))
	f.Add(uint8(0), index, index, manifest) // an index of indexes
	f.Add(uint8(1), []byte(`{"manifests":[{"mediaType":"`+MediaTypeDockerManifest+`","digest":"@mid","platform":null}]}`), manifest, config)
	f.Add(uint8(2), []byte(`{"config":{"digest":"@leaf"},"layers":null}`), []byte(`{"rootfs":{"diff_ids":[]}}`), []byte(nil))
	f.Fuzz(func(t *testing.T, mt uint8, top, mid, leaf []byte) {
		ctx := context.Background()
		blobs := memBlobs{}
		leafD := digest.FromBytes(leaf)
		blobs[leafD] = leaf
		mid = bytes.ReplaceAll(mid, []byte("@leaf"), []byte(leafD))
		midD := digest.FromBytes(mid)
		blobs[midD] = mid
		top = bytes.ReplaceAll(bytes.ReplaceAll(top, []byte("@leaf"), []byte(leafD)), []byte("@mid"), []byte(midD))
		target := ocispec.Descriptor{MediaType: graphMediaTypes[int(mt)%len(graphMediaTypes)], Digest: digest.FromBytes(top), Size: int64(len(top))}
		blobs[target.Digest] = top

		walkGraph(t, ctx, blobs, target, map[digest.Digest]bool{})
		desc, _, err := Manifest(ctx, blobs, target, platforms.Default())
		checkClassified(t, "Manifest", err)
		if err == nil && (!IsManifest(desc.MediaType) || blobs[desc.Digest] == nil) {
			t.Fatalf("Manifest returned %+v, not a stored manifest", desc)
		}
		chain, err := ChainID(ctx, blobs, target, platforms.Default())
		checkClassified(t, "ChainID", err)
		if err == nil {
			if derr := digest.Digest(chain).Validate(); derr != nil {
				t.Fatalf("ChainID = %q: %v", chain, derr)
			}
		}
		var idx ocispec.Index
		if json.Unmarshal(top, &idx) == nil {
			for _, all := range []bool{false, true} {
				out, best, err := SelectManifests(idx, platforms.Default(), all)
				checkClassified(t, "SelectManifests", err)
				if err != nil {
					continue
				}
				if len(out) == 0 && !all || best >= len(out) || best < -1 || !all && best != 0 {
					t.Fatalf("SelectManifests(all=%v) = %d manifests, best %d", all, len(out), best)
				}
				for _, d := range out {
					if !IsManifest(d.MediaType) {
						t.Fatalf("SelectManifests chose %q", d.MediaType)
					}
				}
				if best >= 0 && out[best].Platform != nil && !platforms.Default().Match(*out[best].Platform) {
					t.Fatalf("SelectManifests chose %+v for %s", out[best].Platform, platforms.DefaultString())
				}
			}
		}
	})
}

// walkGraph lists desc's children and theirs, each blob once, checking
// that ChildLabels names each child once.
func walkGraph(t *testing.T, ctx context.Context, p memBlobs, desc ocispec.Descriptor, seen map[digest.Digest]bool) {
	if seen[desc.Digest] {
		return
	}
	seen[desc.Digest] = true
	children, err := Children(ctx, p, desc)
	checkClassified(t, "Children", err)
	if err != nil {
		return
	}
	if !IsManifest(desc.MediaType) && !IsIndex(desc.MediaType) && len(children) > 0 {
		t.Fatalf("a %q has children", desc.MediaType)
	}
	labels := ChildLabels(desc, children)
	if len(labels) != len(children) {
		t.Fatalf("%d children, %d labels: %v", len(children), len(labels), labels)
	}
	for _, c := range children {
		walkGraph(t, ctx, p, c, seen)
	}
}

// checkClassified fails on an error that is none of the classes a
// malformed or missing blob may give.
func checkClassified(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, is := range []func(error) bool{errdefs.IsInvalidArgument, errdefs.IsNotFound, errdefs.IsDataLoss, errdefs.IsFailedPrecondition, errdefs.IsNotImplemented} {
		if is(err) {
			return
		}
	}
	t.Fatalf("%s: unclassified error: %v", what, err)
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// maxImportGrowth bounds what an import stores per byte of archive: the
// blobs themselves, plus a manifest per docker entry (a few hundred bytes
// per layer path of its manifest.json).
const maxImportGrowth = 64

// FuzzImport feeds archive bytes to Import (an OCI layout or docker-save
// tar, gzip or not) on a real content store: it must not panic, must
// classify its errors, must leave no ingest and write nothing outside the
// store's directories, and must store at most maxImportGrowth bytes per
// byte of archive.
func FuzzImport(f *testing.F) {
	for _, a := range importSeeds(f) {
		f.Add(a)
	}
	// The store fsyncs each blob: on a disk that is a tenth of a second
	// an import, on tmpfs nothing.
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		f.Setenv("TMPDIR", "/dev/shm")
	}
	f.Fuzz(func(t *testing.T, archive []byte) {
		ctx, s := newStore(t)
		outside := t.TempDir()
		sentinel := filepath.Join(outside, "sentinel")
		if err := os.WriteFile(sentinel, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Import(ctx, s.cs, s.db.Images(), bytes.NewReader(archive), ImportOptions{Leases: s.db.Leases(), AllPlatforms: len(archive)%2 == 0})
		if err != nil && !errors.Is(err, context.Canceled) {
			checkClassified(t, "Import", err)
		}
		if sts, _ := s.cs.ListStatuses(ctx); len(sts) != 0 {
			t.Fatalf("import (%v) left ingests: %v", err, sts)
		}
		var stored int64
		s.cs.Walk(ctx, func(i content.Info) error { stored += i.Size; return nil })
		if stored > int64(maxImportGrowth*len(archive)) {
			t.Fatalf("a %d-byte archive stored %d bytes", len(archive), stored)
		}
		ents, err := os.ReadDir(outside)
		if err != nil || len(ents) != 1 {
			t.Fatalf("outside the store: %v %v", ents, err)
		}
		if b, err := os.ReadFile(sentinel); err != nil || string(b) != "x" {
			t.Fatalf("sentinel: %q %v", b, err)
		}
	})
}

// importSeeds are archives as keel export, docker save (legacy and 25+)
// and containerd's export write them, and hostile variants.
func importSeeds(t testing.TB) [][]byte {
	l1 := layerTar(t, map[string]string{"a": "1"})
	l2 := gzipped(t, layerTar(t, map[string]string{"b": "2"}))
	cfg := mustMarshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(l1), digest.FromBytes(layerTar(t, map[string]string{"b": "2"}))}},
	})
	cfgD, l1D, l2D := digest.FromBytes(cfg), digest.FromBytes(l1), digest.FromBytes(l2)
	mj := string(mustMarshal([]dockerManifest{{
		Config: cfgD.Encoded() + ".json", RepoTags: []string{"busybox:latest"},
		Layers: []string{"aaa/layer.tar", "bbb/layer.tar"},
	}}))
	legacy := buildTar(t, [][2]string{
		{"aaa/", ""}, {"aaa/VERSION", "1.0"}, {"aaa/json", "{}"}, {"aaa/layer.tar", string(l1)},
		{"bbb/", ""}, {"bbb/layer.tar", string(l2)},
		{cfgD.Encoded() + ".json", string(cfg)},
		{"manifest.json", mj},
		{"repositories", `{"busybox":{"latest":"bbb"}}`},
	})
	manifest := mustMarshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgD, Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{
			{MediaType: ocispec.MediaTypeImageLayer, Digest: l1D, Size: int64(len(l1))},
			{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l2D, Size: int64(len(l2))},
		},
	})
	mD := digest.FromBytes(manifest)
	index := func(ann map[string]string) string {
		return string(mustMarshal(ocispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: mD, Size: int64(len(manifest)), Annotations: ann}},
		}))
	}
	blobs := [][2]string{
		{"blobs/", ""}, {"blobs/sha256/", ""},
		{BlobPath(cfgD), string(cfg)}, {BlobPath(l1D), string(l1)}, {BlobPath(l2D), string(l2)}, {BlobPath(mD), string(manifest)},
	}
	layout := [2]string{"oci-layout", `{"imageLayoutVersion":"1.0.0"}`}
	oci := buildTar(t, append(append([][2]string{layout}, blobs...),
		[2]string{"index.json", index(map[string]string{ocispec.AnnotationRefName: "example.com/app:v1", AnnotationImageName: "example.com/app:v1"})}))
	docker25 := buildTar(t, append(append([][2]string{layout}, blobs...),
		[2]string{"index.json", index(map[string]string{ocispec.AnnotationRefName: "latest", AnnotationImageName: "docker.io/library/app:latest"})},
		[2]string{"manifest.json", string(mustMarshal([]dockerManifest{{
			Config: BlobPath(cfgD), RepoTags: []string{"app:latest"}, Layers: []string{BlobPath(l1D), BlobPath(l2D)},
		}}))}))
	unnamed := buildTar(t, append(append([][2]string{layout}, blobs...), [2]string{"index.json", index(nil)}))
	hostile := buildTar(t, [][2]string{
		{"../../escape", "x"}, {"/abs/escape", "x"}, {"loop", "->loop"}, {"a", "->b"}, {"b", "->a"},
		{"blobs/sha256/" + strings.Repeat("0", 64), "wrong"},
		{"manifest.json", `[{"Config":"loop","RepoTags":["UPPER:x"],"Layers":["a","../../etc/passwd"]}]`},
	})
	return [][]byte{legacy, oci, docker25, unnamed, hostile, gzipped(t, oci), nil, []byte("not a tar")}
}
