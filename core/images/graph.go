package images

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Docker media types keel reads beside OCI's (schema2 and its list).
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerZstd    = "application/vnd.docker.image.rootfs.diff.tar.zstd"
)

// maxManifestSize bounds a manifest, index or config read into memory;
// Limits.MaxManifestSize is the bound configured, checked before a fetch.
const maxManifestSize = HardMaxManifestSize

// IsManifest tells whether mt is a single-image manifest (OCI or Docker).
func IsManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

// IsIndex tells whether mt is an index (OCI) or a manifest list (Docker).
func IsIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

// ReadBlob reads the whole blob desc names from p, refusing one larger than
// a manifest may be and checking the digest.
func ReadBlob(ctx context.Context, p content.Provider, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxManifestSize {
		return nil, fmt.Errorf("blob %s: %d bytes is more than the %d a manifest or config may have: %w", desc.Digest, desc.Size, maxManifestSize, errdefs.ErrInvalidArgument)
	}
	ra, err := p.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	size := ra.Size()
	if size > maxManifestSize {
		return nil, fmt.Errorf("blob %s: %d bytes is more than the %d a manifest or config may have: %w", desc.Digest, size, maxManifestSize, errdefs.ErrInvalidArgument)
	}
	data := make([]byte, size)
	if _, err := ra.ReadAt(data, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read blob %s: %w", desc.Digest, err)
	}
	if got := digest.FromBytes(data); desc.Digest != "" && got != desc.Digest {
		return nil, fmt.Errorf("blob %s: content has digest %s: %w", desc.Digest, got, errdefs.ErrDataLoss)
	}
	return data, nil
}

// Children lists what desc refers to: an index's manifests, a manifest's
// config and layers (in that order). Other media types have none.
func Children(ctx context.Context, p content.Provider, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	switch {
	case IsManifest(desc.MediaType):
		data, err := ReadBlob(ctx, p, desc)
		if err != nil {
			return nil, err
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
		}
		return append([]ocispec.Descriptor{m.Config}, m.Layers...), nil
	case IsIndex(desc.MediaType):
		data, err := ReadBlob(ctx, p, desc)
		if err != nil {
			return nil, err
		}
		var idx ocispec.Index
		if err := json.Unmarshal(data, &idx); err != nil {
			return nil, fmt.Errorf("index %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
		}
		return idx.Manifests, nil
	}
	return nil, nil
}

// ChildLabels are the gc.ref labels (containerd's names) that tie desc to
// children, as Children listed them: ".m.<i>" for an index's manifests,
// ".config" and ".l.<i>" for a manifest's config and layers.
func ChildLabels(desc ocispec.Descriptor, children []ocispec.Descriptor) map[string]string {
	labels := map[string]string{}
	for i, c := range children {
		switch {
		case IsIndex(desc.MediaType):
			labels[gc.LabelRefContent+".m."+strconv.Itoa(i)] = c.Digest.String()
		case i == 0:
			labels[gc.LabelRefContent+".config"] = c.Digest.String()
		default:
			labels[gc.LabelRefContent+".l."+strconv.Itoa(i-1)] = c.Digest.String()
		}
	}
	return labels
}
