package config

import (
	"github.com/docker/go-units"
	"github.com/hashicorp/hcl/v2"
)

// MaxManifestSizeCeiling is the most limits.max_manifest_size may say: a
// manifest, index or config is read whole into keeld's memory.
const MaxManifestSizeCeiling = 64 << 20

// MaxConcurrentDownloadsCeiling bounds max_concurrent_downloads.
const MaxConcurrentDownloadsCeiling = 64

// Limits bound the work one image may make keeld do (the `limits {}`
// block); a key left out is 0 here and takes keel's default (see
// core/images.DefaultLimits and config.hcl.example).
type Limits struct {
	MaxLayers            int   `json:"max_layers,omitempty"`
	MaxLayerSize         int64 `json:"max_layer_size,omitempty"`
	MaxLayerUnpackedSize int64 `json:"max_layer_unpacked_size,omitempty"`
	MaxImageUnpackedSize int64 `json:"max_image_unpacked_size,omitempty"`
	MaxUnpackRatio       int64 `json:"max_unpack_ratio,omitempty"`
	MaxManifestSize      int64 `json:"max_manifest_size,omitempty"`
	MaxIndexManifests    int   `json:"max_index_manifests,omitempty"`
	MaxArchiveEntries    int   `json:"max_archive_entries,omitempty"`
}

// limitsSchema is the block as written: counts are numbers, sizes a
// number of bytes or a string with a binary unit ("512MiB", "16GiB").
type limitsSchema struct {
	MaxLayers                 *int      `hcl:"max_layers,optional"`
	MaxLayersRange            hcl.Range `hcl:"max_layers,attr_value_range"`
	MaxLayerSize              *string   `hcl:"max_layer_size,optional"`
	MaxLayerSizeRange         hcl.Range `hcl:"max_layer_size,attr_value_range"`
	MaxLayerUnpackedSize      *string   `hcl:"max_layer_unpacked_size,optional"`
	MaxLayerUnpackedSizeRange hcl.Range `hcl:"max_layer_unpacked_size,attr_value_range"`
	MaxImageUnpackedSize      *string   `hcl:"max_image_unpacked_size,optional"`
	MaxImageUnpackedSizeRange hcl.Range `hcl:"max_image_unpacked_size,attr_value_range"`
	MaxUnpackRatio            *int      `hcl:"max_unpack_ratio,optional"`
	MaxUnpackRatioRange       hcl.Range `hcl:"max_unpack_ratio,attr_value_range"`
	MaxManifestSize           *string   `hcl:"max_manifest_size,optional"`
	MaxManifestSizeRange      hcl.Range `hcl:"max_manifest_size,attr_value_range"`
	MaxIndexManifests         *int      `hcl:"max_index_manifests,optional"`
	MaxIndexManifestsRange    hcl.Range `hcl:"max_index_manifests,attr_value_range"`
	MaxArchiveEntries         *int      `hcl:"max_archive_entries,optional"`
	MaxArchiveEntriesRange    hcl.Range `hcl:"max_archive_entries,attr_value_range"`
}

func decodeLimits(l *limitsSchema, fail failFunc) *Limits {
	out := &Limits{}
	count := func(v *int, r hcl.Range, key string, to *int) {
		if v == nil {
			return
		}
		if *v < 1 {
			fail(r, "Invalid limits "+key, "%s must be at least 1, not %d.", key, *v)
			return
		}
		*to = *v
	}
	size := func(v *string, r hcl.Range, key string, ceiling int64, to *int64) {
		if v == nil {
			return
		}
		n, err := units.RAMInBytes(*v)
		switch {
		case err != nil:
			fail(r, "Invalid limits "+key, "%s %q is not a size such as 1073741824, \"512MiB\" or \"16GiB\": %v.", key, *v, err)
		case n < 1:
			fail(r, "Invalid limits "+key, "%s must be at least 1 byte, not %q.", key, *v)
		case ceiling > 0 && n > ceiling:
			fail(r, "Invalid limits "+key, "%s %q is over the most keeld allows, %d bytes.", key, *v, ceiling)
		default:
			*to = n
		}
	}
	count(l.MaxLayers, l.MaxLayersRange, "max_layers", &out.MaxLayers)
	size(l.MaxLayerSize, l.MaxLayerSizeRange, "max_layer_size", 0, &out.MaxLayerSize)
	size(l.MaxLayerUnpackedSize, l.MaxLayerUnpackedSizeRange, "max_layer_unpacked_size", 0, &out.MaxLayerUnpackedSize)
	size(l.MaxImageUnpackedSize, l.MaxImageUnpackedSizeRange, "max_image_unpacked_size", 0, &out.MaxImageUnpackedSize)
	var ratio int
	count(l.MaxUnpackRatio, l.MaxUnpackRatioRange, "max_unpack_ratio", &ratio)
	out.MaxUnpackRatio = int64(ratio)
	size(l.MaxManifestSize, l.MaxManifestSizeRange, "max_manifest_size", MaxManifestSizeCeiling, &out.MaxManifestSize)
	count(l.MaxIndexManifests, l.MaxIndexManifestsRange, "max_index_manifests", &out.MaxIndexManifests)
	count(l.MaxArchiveEntries, l.MaxArchiveEntriesRange, "max_archive_entries", &out.MaxArchiveEntries)
	return out
}
