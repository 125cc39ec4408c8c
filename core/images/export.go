package images

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// AnnotationImageName is containerd's annotation for an image's full name
// in an index.json, written beside OCI's org.opencontainers.image.ref.name
// so that containerd and Docker name the images as keel does.
const AnnotationImageName = "io.containerd.image.name"

// Named is an image to export: a name and its target.
type Named struct {
	Name   string
	Target ocispec.Descriptor
}

// ExportOptions tune Export.
type ExportOptions struct {
	// AllPlatforms fails the export when a manifest of an index is not
	// stored; without it such manifests are left out (the index itself is
	// written as stored).
	AllPlatforms bool
}

// Export writes an OCI image layout tar of imgs, read from p, to w:
// oci-layout, blobs/<alg>/<encoded> for every blob once, then index.json
// with one entry per image, named by org.opencontainers.image.ref.name (and
// io.containerd.image.name). A manifest's config or layer missing from p is
// FailedPrecondition.
func Export(ctx context.Context, p content.Provider, w io.Writer, imgs []Named, opts ExportOptions) error {
	var blobs []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	var walk func(desc ocispec.Descriptor, optional bool) error
	walk = func(desc ocispec.Descriptor, optional bool) error {
		if seen[desc.Digest] {
			return nil
		}
		children, err := Children(ctx, p, desc)
		if errdefs.IsNotFound(err) {
			if optional {
				return nil
			}
			return fmt.Errorf("%s %s is not stored: %w", desc.MediaType, desc.Digest, errdefs.ErrFailedPrecondition)
		}
		if err != nil {
			return err
		}
		seen[desc.Digest] = true
		blobs = append(blobs, desc)
		for _, c := range children {
			if err := walk(c, IsIndex(desc.MediaType) && !opts.AllPlatforms); err != nil {
				return err
			}
		}
		return nil
	}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, img := range imgs {
		if err := walk(img.Target, false); err != nil {
			return fmt.Errorf("export %s: %w", img.Name, err)
		}
		d := img.Target
		d.Annotations = map[string]string{}
		for k, v := range img.Target.Annotations {
			d.Annotations[k] = v
		}
		d.Annotations[ocispec.AnnotationRefName] = img.Name
		d.Annotations[AnnotationImageName] = img.Name
		index.Manifests = append(index.Manifests, d)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}
	idx, err := json.Marshal(index)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := writeTarFile(tw, ocispec.ImageLayoutFile, layout); err != nil {
		return err
	}
	dirs := map[string]bool{"blobs/": true}
	if err := tw.WriteHeader(tarHeader("blobs/", tar.TypeDir, 0)); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := BlobPath(b.Digest)
		if dir := path.Dir(name) + "/"; !dirs[dir] {
			dirs[dir] = true
			if err := tw.WriteHeader(tarHeader(dir, tar.TypeDir, 0)); err != nil {
				return err
			}
		}
		if err := copyBlob(ctx, tw, p, b, name); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if err := writeTarFile(tw, ocispec.ImageIndexFile, idx); err != nil {
		return err
	}
	return tw.Close()
}

// BlobPath is where a blob lives in an OCI image layout.
func BlobPath(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// tarHeader is a header with fixed times and owner, so that one export
// of the same images gives the same bytes.
func tarHeader(name string, typ byte, size int64) *tar.Header {
	mode := int64(0o644)
	if typ == tar.TypeDir {
		mode = 0o755
	}
	return &tar.Header{Name: name, Typeflag: typ, Size: size, Mode: mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
}

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(tarHeader(name, tar.TypeReg, int64(len(data)))); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// copyBlob writes the blob desc names, read from p, as the tar file name.
func copyBlob(ctx context.Context, tw *tar.Writer, p content.Provider, desc ocispec.Descriptor, name string) error {
	ra, err := p.ReaderAt(ctx, desc)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%s %s is not stored: %w", desc.MediaType, desc.Digest, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return err
	}
	defer ra.Close()
	if err := tw.WriteHeader(tarHeader(name, tar.TypeReg, ra.Size())); err != nil {
		return err
	}
	n, err := io.Copy(tw, io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	if n != ra.Size() {
		return fmt.Errorf("blob %s: read %d of %d bytes: %w", desc.Digest, n, ra.Size(), errdefs.ErrDataLoss)
	}
	return nil
}
