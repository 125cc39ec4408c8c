package images

import (
	"errors"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/diff"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Limits bound the work one image may cause: what a pull, an unpack or an
// import refuses before fetching or writing more. Each is checked as
// early as its number is known — the counts and declared sizes when the
// manifest is read, before any layer is fetched; the uncompressed bytes
// while a layer is applied — and a refusal names the config key (in the
// `limits {}` block) to raise. A zero field takes its default
// (DefaultLimits).
type Limits struct {
	// MaxLayers bounds the layers of one manifest (max_layers).
	MaxLayers int
	// MaxLayerSize bounds a layer blob as its descriptor declares it
	// (max_layer_size).
	MaxLayerSize int64
	// MaxLayerUnpackedSize bounds the uncompressed bytes of one layer
	// (max_layer_unpacked_size).
	MaxLayerUnpackedSize int64
	// MaxImageUnpackedSize bounds the uncompressed bytes of the layers an
	// unpack applies, together (max_image_unpacked_size).
	MaxImageUnpackedSize int64
	// MaxUnpackRatio bounds a layer's uncompressed bytes to that many
	// times its blob's size (max_unpack_ratio), above MinRatioBytes: a
	// gzip of zeros expands a thousandfold, real layers a few times.
	MaxUnpackRatio int64
	// MaxManifestSize bounds a manifest, index or config
	// (max_manifest_size), at most HardMaxManifestSize.
	MaxManifestSize int64
	// MaxIndexManifests bounds the entries of an index
	// (max_index_manifests).
	MaxIndexManifests int
	// MaxArchiveEntries bounds the tar entries of an imported archive
	// (max_archive_entries).
	MaxArchiveEntries int
}

// Defaults of Limits: generous for real images (the largest public layers
// are a few GiB, images rarely over a hundred layers), small enough that a
// hostile image cannot fill a disk or hold keeld for long.
const (
	DefaultMaxLayers            = 128
	DefaultMaxLayerSize         = 16 << 30
	DefaultMaxLayerUnpackedSize = 32 << 30
	DefaultMaxImageUnpackedSize = 64 << 30
	DefaultMaxUnpackRatio       = 100
	DefaultMaxManifestSize      = 8 << 20
	DefaultMaxIndexManifests    = 256
	DefaultMaxArchiveEntries    = 100000

	// MinRatioBytes is what any layer may expand to whatever its ratio.
	MinRatioBytes = 64 << 20
	// HardMaxManifestSize is the most max_manifest_size may say: a
	// manifest, index or config is read whole into memory.
	HardMaxManifestSize = 64 << 20
)

// DefaultLimits returns the default of every limit.
func DefaultLimits() Limits {
	return Limits{
		MaxLayers:            DefaultMaxLayers,
		MaxLayerSize:         DefaultMaxLayerSize,
		MaxLayerUnpackedSize: DefaultMaxLayerUnpackedSize,
		MaxImageUnpackedSize: DefaultMaxImageUnpackedSize,
		MaxUnpackRatio:       DefaultMaxUnpackRatio,
		MaxManifestSize:      DefaultMaxManifestSize,
		MaxIndexManifests:    DefaultMaxIndexManifests,
		MaxArchiveEntries:    DefaultMaxArchiveEntries,
	}
}

// withDefaults fills the zero fields of l.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	def := func(v *int64, dv int64) {
		if *v <= 0 {
			*v = dv
		}
	}
	defInt := func(v *int, dv int) {
		if *v <= 0 {
			*v = dv
		}
	}
	defInt(&l.MaxLayers, d.MaxLayers)
	def(&l.MaxLayerSize, d.MaxLayerSize)
	def(&l.MaxLayerUnpackedSize, d.MaxLayerUnpackedSize)
	def(&l.MaxImageUnpackedSize, d.MaxImageUnpackedSize)
	def(&l.MaxUnpackRatio, d.MaxUnpackRatio)
	def(&l.MaxManifestSize, d.MaxManifestSize)
	l.MaxManifestSize = min(l.MaxManifestSize, HardMaxManifestSize)
	defInt(&l.MaxIndexManifests, d.MaxIndexManifests)
	defInt(&l.MaxArchiveEntries, d.MaxArchiveEntries)
	return l
}

// LimitError is a limit an image went over: FailedPrecondition, naming
// the config key.
type LimitError struct {
	// What went over (e.g. "manifest sha256:…: 2000 layers").
	What string
	// Key is the config key in the limits block, Limit its value.
	Key   string
	Limit int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s: over the limit of %d (limits { %s } in keeld's config)", e.What, e.Limit, e.Key)
}

// Unwrap makes the error FailedPrecondition.
func (e *LimitError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// IsLimit tells whether err is (or wraps) a LimitError.
func IsLimit(err error) bool {
	var le *LimitError
	return errors.As(err, &le)
}

// Layer media types keel applies: OCI's and Docker schema2's, plain, gzip
// or zstd.
var layerMediaTypes = []string{
	ocispec.MediaTypeImageLayer,
	ocispec.MediaTypeImageLayerGzip,
	ocispec.MediaTypeImageLayerZstd,
	MediaTypeDockerLayer,
	MediaTypeDockerLayerGzip,
	MediaTypeDockerLayerZstd,
}

// foreignMediaTypes are layers meant to be fetched from their descriptor's
// urls rather than the registry (Windows base layers): keel refuses them,
// as it fetches only from registries and runs only Linux images.
var foreignMediaTypes = []string{
	"application/vnd.oci.image.layer.nondistributable.v1.tar",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	"application/vnd.docker.image.rootfs.foreign.diff.tar",
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}

// CheckLayerMediaType refuses a layer media type keel does not apply:
// InvalidArgument for an unknown one, NotImplemented for a foreign
// (non-distributable) layer.
func CheckLayerMediaType(desc ocispec.Descriptor) error {
	mt, _, _ := strings.Cut(desc.MediaType, ";")
	mt = strings.TrimSpace(mt)
	for _, known := range layerMediaTypes {
		if mt == known {
			return nil
		}
	}
	for _, f := range foreignMediaTypes {
		if mt == f {
			return fmt.Errorf("layer %s: foreign (non-distributable) media type %q: keel pulls only layers a registry serves: %w", desc.Digest, desc.MediaType, errdefs.ErrNotImplemented)
		}
	}
	return fmt.Errorf("layer %s: unknown media type %q (a layer is one of %s): %w", desc.Digest, desc.MediaType, strings.Join(layerMediaTypes, ", "), errdefs.ErrInvalidArgument)
}

// checkManifest refuses, before anything of it is fetched, a manifest with
// more layers than allowed, a layer of an unknown media type or declaring
// more bytes than allowed, a config larger than a manifest may be.
func (l Limits) checkManifest(desc ocispec.Descriptor, m ocispec.Manifest) error {
	if len(m.Layers) > l.MaxLayers {
		return &LimitError{What: fmt.Sprintf("manifest %s: %d layers", desc.Digest, len(m.Layers)), Key: "max_layers", Limit: int64(l.MaxLayers)}
	}
	if err := l.checkBlobSize(m.Config, "config", "max_manifest_size", l.MaxManifestSize); err != nil {
		return err
	}
	for _, layer := range m.Layers {
		if err := CheckLayerMediaType(layer); err != nil {
			return fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
		if err := l.checkBlobSize(layer, "layer", "max_layer_size", l.MaxLayerSize); err != nil {
			return fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
	}
	return nil
}

// checkIndex refuses an index with more entries than allowed.
func (l Limits) checkIndex(desc ocispec.Descriptor, idx ocispec.Index) error {
	if len(idx.Manifests) > l.MaxIndexManifests {
		return &LimitError{What: fmt.Sprintf("index %s: %d manifests", desc.Digest, len(idx.Manifests)), Key: "max_index_manifests", Limit: int64(l.MaxIndexManifests)}
	}
	return nil
}

// checkBlobSize refuses a descriptor declaring a negative size or more
// than limit bytes.
func (l Limits) checkBlobSize(desc ocispec.Descriptor, role, key string, limit int64) error {
	if desc.Size < 0 {
		return fmt.Errorf("%s %s: negative size %d: %w", role, desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	if desc.Size > limit {
		return &LimitError{What: fmt.Sprintf("%s %s declares %d bytes", role, desc.Digest, desc.Size), Key: key, Limit: limit}
	}
	return nil
}

// unpackBudget is how many uncompressed bytes layer may expand to, given
// what the image has used already (used), and the key of the limit that
// binds.
func (l Limits) unpackBudget(layer ocispec.Descriptor, used int64) (int64, string) {
	budget, key := l.MaxLayerUnpackedSize, "max_layer_unpacked_size"
	if rest := l.MaxImageUnpackedSize - used; rest < budget {
		// At least a byte: 0 would mean no bound to diff.WithMaxSize.
		budget, key = max(rest, 1), "max_image_unpacked_size"
	}
	if layer.Size < (1<<62)/l.MaxUnpackRatio {
		if r := max(layer.Size*l.MaxUnpackRatio, MinRatioBytes); r < budget {
			budget, key = r, "max_unpack_ratio"
		}
	}
	return budget, key
}

// unpackLimitError names the limit a layer went over while applied (the
// caller names the layer).
func unpackLimitError(layer ocispec.Descriptor, budget int64, key string, l Limits) error {
	switch key {
	case "max_image_unpacked_size":
		return &LimitError{What: "the image's layers expand to more bytes", Key: key, Limit: l.MaxImageUnpackedSize}
	case "max_unpack_ratio":
		return &LimitError{What: fmt.Sprintf("%d compressed bytes expand to more than %d", layer.Size, budget), Key: key, Limit: l.MaxUnpackRatio}
	}
	return &LimitError{What: "more bytes uncompressed", Key: key, Limit: budget}
}

// asUnpackLimit turns diff's size error into the LimitError naming the key.
func asUnpackLimit(err error, layer ocispec.Descriptor, budget int64, key string, l Limits) error {
	if errors.Is(err, diff.ErrTooLarge) {
		return unpackLimitError(layer, budget, key, l)
	}
	return err
}
