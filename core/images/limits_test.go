package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/diff"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

func layerDesc(mt string, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromString(fmt.Sprint(mt, size)), Size: size}
}

// limitKey returns the config key a LimitError names, or "".
func limitKey(err error) string {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Key
	}
	return ""
}

func TestCheckManifestLimits(t *testing.T) {
	l := Limits{MaxLayers: 3, MaxLayerSize: 1000, MaxManifestSize: 100}.withDefaults()
	gz := ocispec.MediaTypeImageLayerGzip
	cfg := layerDesc(ocispec.MediaTypeImageConfig, 50)
	for _, tc := range []struct {
		name   string
		config ocispec.Descriptor
		layers []ocispec.Descriptor
		is     func(error) bool
		key    string
	}{
		{"Fine", cfg, []ocispec.Descriptor{layerDesc(gz, 1000), layerDesc(MediaTypeDockerLayerZstd, 1), layerDesc(ocispec.MediaTypeImageLayer, 0)}, nil, ""},
		{"TooManyLayers", cfg, []ocispec.Descriptor{layerDesc(gz, 1), layerDesc(gz, 2), layerDesc(gz, 3), layerDesc(gz, 4)}, errdefs.IsFailedPrecondition, "max_layers"},
		{"HugeLayer", cfg, []ocispec.Descriptor{layerDesc(gz, 1e15)}, errdefs.IsFailedPrecondition, "max_layer_size"},
		{"NegativeSize", cfg, []ocispec.Descriptor{layerDesc(gz, -1)}, errdefs.IsInvalidArgument, ""},
		{"HugeConfig", layerDesc(ocispec.MediaTypeImageConfig, 101), nil, errdefs.IsFailedPrecondition, "max_manifest_size"},
		{"UnknownMediaType", cfg, []ocispec.Descriptor{layerDesc("application/x-evil", 1)}, errdefs.IsInvalidArgument, ""},
		{"Foreign", cfg, []ocispec.Descriptor{layerDesc("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", 1)}, errdefs.IsNotImplemented, ""},
		{"Nondistributable", cfg, []ocispec.Descriptor{layerDesc("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", 1)}, errdefs.IsNotImplemented, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.checkManifest(layerDesc(ocispec.MediaTypeImageManifest, 10), ocispec.Manifest{Config: tc.config, Layers: tc.layers})
			if tc.is == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !tc.is(err) || limitKey(err) != tc.key {
				t.Fatalf("err = %v (key %q), want key %q and another class", err, limitKey(err), tc.key)
			}
			if tc.key != "" && !strings.Contains(err.Error(), tc.key) {
				t.Errorf("%v does not name %s", err, tc.key)
			}
		})
	}
}

func TestCheckIndexLimits(t *testing.T) {
	l := Limits{MaxIndexManifests: 2}.withDefaults()
	idx := ocispec.Index{Manifests: make([]ocispec.Descriptor, 3)}
	if err := l.checkIndex(ocispec.Descriptor{}, idx); limitKey(err) != "max_index_manifests" || !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("err = %v", err)
	}
	if err := l.checkIndex(ocispec.Descriptor{}, ocispec.Index{Manifests: idx.Manifests[:2]}); err != nil {
		t.Fatal(err)
	}
}

func TestUnpackBudget(t *testing.T) {
	l := Limits{MaxLayerUnpackedSize: 1 << 30, MaxImageUnpackedSize: 3 << 30, MaxUnpackRatio: 10}.withDefaults()
	for _, tc := range []struct {
		name   string
		size   int64 // the layer blob's
		used   int64
		budget int64
		key    string
	}{
		{"SmallLayerFloor", 1000, 0, MinRatioBytes, "max_unpack_ratio"},
		{"Ratio", 20 << 20, 0, 200 << 20, "max_unpack_ratio"},
		{"PerLayer", 500 << 20, 0, 1 << 30, "max_layer_unpacked_size"},
		{"ImageRest", 500 << 20, 2<<30 + 512<<20, 512 << 20, "max_image_unpacked_size"},
		{"ImageSpent", 500 << 20, 3 << 30, 1, "max_image_unpacked_size"},
		{"HugeBlobNoOverflow", 1 << 61, 0, 1 << 30, "max_layer_unpacked_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget, key := l.unpackBudget(ocispec.Descriptor{Size: tc.size}, tc.used)
			if budget != tc.budget || key != tc.key {
				t.Fatalf("budget %d (%s), want %d (%s)", budget, key, tc.budget, tc.key)
			}
			err := asUnpackLimit(fmt.Errorf("apply: %w", diff.ErrTooLarge), ocispec.Descriptor{Size: tc.size}, budget, key, l)
			if limitKey(err) != key || !errdefs.IsFailedPrecondition(err) {
				t.Errorf("limit error %v does not name %s", err, key)
			}
		})
	}
}

// TestImportLimits: an archive with too many entries, a file header
// declaring more than a layer may have, a manifest over the limits: each
// refused, nothing recorded, nothing left partial.
func TestImportLimits(t *testing.T) {
	layout := `{"imageLayoutVersion":"1.0.0"}`
	// layoutWith is an OCI layout whose one manifest lists layers (not
	// stored: the limits are checked before the layers are looked for).
	layoutWith := func(layers ...ocispec.Descriptor) [][2]string {
		cfg := []byte(`{"rootfs":{"type":"layers"}}`)
		cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
		m := mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers})
		md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m)),
			Annotations: map[string]string{ocispec.AnnotationRefName: "x:1"}}
		return [][2]string{
			{"oci-layout", layout},
			{BlobPath(cd.Digest), string(cfg)},
			{BlobPath(md.Digest), string(m)},
			{"index.json", string(mustJSON(t, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{md}}))},
		}
	}
	var many [][2]string
	for i := range 20 {
		many = append(many, [2]string{fmt.Sprintf("f%d", i), "x"})
	}
	// A header promising 1e15 bytes, and none of them.
	var huge bytes.Buffer
	tw := tar.NewWriter(&huge)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 1e15, Mode: 0o644})
	gz := ocispec.MediaTypeImageLayerGzip
	limits := Limits{MaxArchiveEntries: 10, MaxLayers: 2}
	for _, tc := range []struct {
		name    string
		archive []byte
		is      func(error) bool
		key     string
	}{
		{"TooManyEntries", buildTar(t, many), errdefs.IsFailedPrecondition, "max_archive_entries"},
		{"HugeFile", huge.Bytes(), errdefs.IsFailedPrecondition, "max_layer_size"},
		{"TooManyLayers", buildTar(t, layoutWith(layerDesc(gz, 1), layerDesc(gz, 2), layerDesc(gz, 3))), errdefs.IsFailedPrecondition, "max_layers"},
		{"HugeLayer", buildTar(t, layoutWith(layerDesc(gz, 1e15))), errdefs.IsFailedPrecondition, "max_layer_size"},
		{"UnknownMediaType", buildTar(t, layoutWith(layerDesc("application/x-evil", 1))), errdefs.IsInvalidArgument, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, s := newStore(t)
			_, err := Import(ctx, s.cs, s.db.Images(), bytes.NewReader(tc.archive), ImportOptions{Leases: s.db.Leases(), Limits: limits})
			if !tc.is(err) || limitKey(err) != tc.key {
				t.Fatalf("import: %v (key %q), want key %q", err, limitKey(err), tc.key)
			}
			if imgs, _ := s.db.Images().List(ctx); len(imgs) != 0 {
				t.Errorf("records left: %v", imgs)
			}
			if sts, _ := s.cs.ListStatuses(ctx); len(sts) != 0 {
				t.Errorf("ingests left: %v", sts)
			}
		})
	}
}
