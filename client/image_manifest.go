package client

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest is the image's manifest for the host's platform (through its
// index, when the image is one): its config's descriptor is the image's
// id as the CRI and docker name it, its layers' sizes its size.
func (i *LocalImage) Manifest(ctx context.Context) (ocispec.Manifest, error) {
	return i.manifest(ctx)
}
