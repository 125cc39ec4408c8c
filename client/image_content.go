package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// LocalImage is an image record read through keeld's content store: its
// config and root filesystem for the host's platform.
type LocalImage struct {
	c   *Client
	img Image
}

var _ oci.Image = (*LocalImage)(nil)

// LocalImage returns img's content view.
func (c *Client) LocalImage(img Image) *LocalImage { return &LocalImage{c: c, img: img} }

// Name is the image's name.
func (i *LocalImage) Name() string { return i.img.Name }

// maxConfigSize bounds a manifest, index or config read into memory.
const maxConfigSize = 4 << 20

func (i *LocalImage) readJSON(ctx context.Context, desc ocispec.Descriptor, v any) error {
	if desc.Size > maxConfigSize {
		return fmt.Errorf("blob %s: %d bytes is too large: %w", desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	ra, err := i.c.ContentStore().ReaderAt(ctx, desc)
	if err != nil {
		return fmt.Errorf("image %s: %w", i.img.Name, err)
	}
	defer ra.Close()
	data := make([]byte, ra.Size())
	if _, err := ra.ReadAt(data, 0); err != nil && err != io.EOF {
		return err
	}
	if got := digest.FromBytes(data); got != desc.Digest {
		return fmt.Errorf("blob %s: content has digest %s: %w", desc.Digest, got, errdefs.ErrDataLoss)
	}
	return json.Unmarshal(data, v)
}

// manifest picks the host's manifest, through an index if need be.
func (i *LocalImage) manifest(ctx context.Context) (ocispec.Manifest, error) {
	desc := i.img.Target
	for range 4 { // nested indexes, a few deep at most
		switch desc.MediaType {
		case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
			var m ocispec.Manifest
			return m, i.readJSON(ctx, desc, &m)
		case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			var idx ocispec.Index
			if err := i.readJSON(ctx, desc, &idx); err != nil {
				return ocispec.Manifest{}, err
			}
			match := platforms.Default()
			var best *ocispec.Descriptor
			for _, m := range idx.Manifests {
				if m.Platform != nil && !match.Match(*m.Platform) {
					continue
				}
				if best == nil || (m.Platform != nil && best.Platform != nil && match.Less(*m.Platform, *best.Platform)) {
					best = &m
				}
			}
			if best == nil {
				return ocispec.Manifest{}, fmt.Errorf("image %s: no manifest for %s: %w", i.img.Name, platforms.DefaultString(), errdefs.ErrNotFound)
			}
			desc = *best
		default:
			return ocispec.Manifest{}, fmt.Errorf("image %s: media type %q is not a manifest or index: %w", i.img.Name, desc.MediaType, errdefs.ErrInvalidArgument)
		}
	}
	return ocispec.Manifest{}, fmt.Errorf("image %s: indexes nested too deep: %w", i.img.Name, errdefs.ErrInvalidArgument)
}

// Config is the image's config for the host's platform.
func (i *LocalImage) Config(ctx context.Context) (ocispec.Image, error) {
	m, err := i.manifest(ctx)
	if err != nil {
		return ocispec.Image{}, err
	}
	var cfg ocispec.Image
	return cfg, i.readJSON(ctx, m.Config, &cfg)
}

// ChainID names the image's unpacked root filesystem in a snapshotter.
func (i *LocalImage) ChainID(ctx context.Context) (digest.Digest, error) {
	cfg, err := i.Config(ctx)
	if err != nil {
		return "", err
	}
	if len(cfg.RootFS.DiffIDs) == 0 {
		return "", fmt.Errorf("image %s: no layers: %w", i.img.Name, errdefs.ErrInvalidArgument)
	}
	return identity.ChainID(cfg.RootFS.DiffIDs), nil
}
