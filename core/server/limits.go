package server

import (
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/images"
)

// maxRequestSize bounds a message keeld's API receives: bulk data moves in
// sdk.ChunkSize messages, everything else is small, so no call makes keeld
// hold more (the plugins' own endpoints keep sdk.MaxMessageSize).
const maxRequestSize = 16 << 20

// maxRefLength bounds an image reference: a name is at most 255 bytes,
// a tag 128, a digest under 100, a host a few dozen.
const maxRefLength = 1024

// imageLimits are the config's limits block for core/images (zero fields
// take images' defaults).
func imageLimits(c *config.Config) images.Limits {
	l := c.Limits
	if l == nil {
		return images.DefaultLimits()
	}
	return images.Limits{
		MaxLayers:            l.MaxLayers,
		MaxLayerSize:         l.MaxLayerSize,
		MaxLayerUnpackedSize: l.MaxLayerUnpackedSize,
		MaxImageUnpackedSize: l.MaxImageUnpackedSize,
		MaxUnpackRatio:       l.MaxUnpackRatio,
		MaxManifestSize:      l.MaxManifestSize,
		MaxIndexManifests:    l.MaxIndexManifests,
		MaxArchiveEntries:    l.MaxArchiveEntries,
	}
}
