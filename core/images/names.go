package images

import (
	"context"
	"fmt"

	"github.com/distribution/reference"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// ImageReader finds image records (*metadata.Images).
type ImageReader interface {
	Get(ctx context.Context, name string) (metadata.Image, error)
	List(ctx context.Context, filters ...string) ([]metadata.Image, error)
}

// NormalizeName is the name pull records for the reference name: its
// registry and, for Docker Hub, library/ made explicit, and :latest when it
// has neither tag nor digest ("busybox" is docker.io/library/busybox:latest).
// A name that is not a reference (an import's "import@sha256:…" base name,
// say) is returned as it is.
func NormalizeName(name string) string {
	named, err := resolver.ParseReference(name)
	if err != nil {
		return name
	}
	return reference.TagNameOnly(named).String()
}

// Lookup finds the image record name refers to, as a user types it: the
// record of exactly that name; else of its normalized form (NormalizeName);
// else, for repo@digest, the record of repo (normalized) whose target is
// the digest, under whatever tag it was pulled. NotFound names both forms.
func Lookup(ctx context.Context, images ImageReader, name string) (metadata.Image, error) {
	img, err := images.Get(ctx, name)
	if !errdefs.IsNotFound(err) {
		return img, err
	}
	named, perr := resolver.ParseReference(name)
	if perr != nil {
		return metadata.Image{}, err
	}
	norm := reference.TagNameOnly(named).String()
	if norm != name {
		img, err = images.Get(ctx, norm)
		if !errdefs.IsNotFound(err) {
			return img, err
		}
	}
	if d, ok := named.(reference.Digested); ok {
		repo := named.Name()
		list, lerr := images.List(ctx, "target.digest=="+d.Digest().String())
		if lerr != nil {
			return metadata.Image{}, lerr
		}
		for _, img := range list {
			if n, err := resolver.ParseReference(img.Name); err == nil && n.Name() == repo {
				return img, nil
			}
		}
	}
	if norm != name {
		return metadata.Image{}, fmt.Errorf("image %q (%s): %w", name, norm, errdefs.ErrNotFound)
	}
	return metadata.Image{}, err
}
