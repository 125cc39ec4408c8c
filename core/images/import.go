package images

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// ImageStore is where Import records images (*metadata.Images).
type ImageStore interface {
	Create(ctx context.Context, img metadata.Image) (metadata.Image, error)
	Update(ctx context.Context, img metadata.Image, fieldpaths ...string) (metadata.Image, error)
}

// LeaseStore makes the lease an import runs under (*metadata.Leases), and
// holds it while the import runs.
type LeaseStore interface {
	Create(ctx context.Context, l metadata.Lease) (metadata.Lease, error)
	Hold(ctx context.Context, id string) (release func(), err error)
	Delete(ctx context.Context, id string) error
}

// ImportOptions tune Import.
type ImportOptions struct {
	// AllPlatforms keeps every manifest of an index; without it only those
	// Platform matches are tied to the index (gc.ref labels) and must be in
	// the archive, the others are left to garbage collection.
	AllPlatforms bool
	// Platform matches the manifests kept (platforms.Default() when nil).
	Platform platforms.MatchComparer
	// BaseName names the images an archive leaves unnamed: BaseName@<digest>
	// ("import" when empty).
	BaseName string
	// Leases, when set and ctx holds no lease, makes a lease for the import
	// (expiring after an hour, should keeld die) and deletes it at the end,
	// so what a failed import wrote is garbage collected.
	Leases LeaseStore
	// Limits bound the archive (its entries, the size of its files) and
	// the images in it, as a pull's (zero fields take their defaults).
	Limits Limits
}

// importLeaseExpiry bounds how long the lease of an import that died (with
// keeld) holds its content; a running import holds its lease however long
// it takes.
const importLeaseExpiry = time.Hour

// Import reads an image archive from r — an OCI image layout tar, or a
// `docker save` tar (manifest.json, legacy <id>/layer.tar files), whose
// manifests it converts to Docker schema2 manifests as containerd's
// importer does — into cs, and records its images in is: the blobs first
// (a blob whose content does not match the digest it is stored under is
// refused), then the gc.ref labels, then the image records (an existing
// record of the same name is pointed at the new target). It returns the
// images recorded.
func Import(ctx context.Context, cs content.Store, is ImageStore, r io.Reader, opts ImportOptions) (_ []metadata.Image, err error) {
	if opts.Platform == nil {
		opts.Platform = platforms.Default()
	}
	if opts.BaseName == "" {
		opts.BaseName = "import"
	}
	opts.Limits = opts.Limits.withDefaults()
	if _, ok := scope.Lease(ctx); !ok && opts.Leases != nil {
		l, err := opts.Leases.Create(ctx, metadata.Lease{Labels: map[string]string{
			gc.LabelExpire: time.Now().Add(importLeaseExpiry).UTC().Format(time.RFC3339),
		}})
		if err != nil {
			return nil, fmt.Errorf("import: lease: %w", err)
		}
		ctx = scope.WithLease(ctx, l.ID)
		release, err := opts.Leases.Hold(ctx, l.ID)
		if err != nil {
			return nil, fmt.Errorf("import: lease: %w", err)
		}
		defer release()
		defer func() {
			// Deleting the lease schedules a collection: what the records
			// do not reach goes.
			if derr := opts.Leases.Delete(context.WithoutCancel(ctx), l.ID); derr != nil && err == nil && !errdefs.IsNotFound(derr) {
				err = fmt.Errorf("import: release lease: %w", derr)
			}
		}()
	}
	a, err := readArchive(ctx, cs, r, opts.Limits)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var named []Named
	switch {
	case a.index != nil && (a.layout != nil || a.docker == nil):
		if a.layout != nil && a.layout.Version != ocispec.ImageLayoutVersion {
			return nil, fmt.Errorf("import: oci-layout version %q: %w", a.layout.Version, errdefs.ErrNotImplemented)
		}
		named = ociImages(a.index, opts.BaseName)
	case a.docker != nil:
		named, err = convertDocker(ctx, cs, a, opts.BaseName)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	default:
		return nil, fmt.Errorf("import: the archive holds neither an index.json nor a manifest.json: %w", errdefs.ErrInvalidArgument)
	}
	labelled := map[digest.Digest]bool{}
	for _, n := range named {
		if err := labelGraph(ctx, cs, n.Target, opts, labelled); err != nil {
			return nil, fmt.Errorf("import %s: %w", n.Name, err)
		}
	}
	var out []metadata.Image
	for _, n := range named {
		img, err := is.Create(ctx, metadata.Image{Name: n.Name, Target: n.Target})
		if errdefs.IsAlreadyExists(err) {
			img, err = is.Update(ctx, metadata.Image{Name: n.Name, Target: n.Target}, "target")
		}
		if err != nil {
			return out, fmt.Errorf("import %s: %w", n.Name, err)
		}
		out = append(out, img)
	}
	return out, nil
}

// ociImages names the entries of an OCI layout's index.json.
func ociImages(idx *ocispec.Index, base string) []Named {
	var out []Named
	for _, d := range idx.Manifests {
		name := d.Annotations[AnnotationImageName]
		if name == "" {
			name = d.Annotations[ocispec.AnnotationRefName]
		}
		if name == "" {
			name = base + "@" + d.Digest.String()
		}
		d.Annotations = maps.Clone(d.Annotations)
		delete(d.Annotations, AnnotationImageName)
		delete(d.Annotations, ocispec.AnnotationRefName)
		if len(d.Annotations) == 0 {
			d.Annotations = nil
		}
		out = append(out, Named{Name: name, Target: d})
	}
	return out
}

// labelGraph checks that the graph under desc is stored (for an index, the
// manifests kept) and ties it together with gc.ref labels.
func labelGraph(ctx context.Context, cs content.Store, desc ocispec.Descriptor, opts ImportOptions, done map[digest.Digest]bool) error {
	if done[desc.Digest] {
		return nil
	}
	if _, err := cs.Info(ctx, desc.Digest); errdefs.IsNotFound(err) {
		return fmt.Errorf("the archive lacks %s %s: %w", desc.MediaType, desc.Digest, errdefs.ErrFailedPrecondition)
	} else if err != nil {
		return err
	}
	children, err := Children(ctx, cs, desc)
	if err != nil {
		return err
	}
	switch {
	case IsManifest(desc.MediaType):
		if err := opts.Limits.checkManifest(desc, ocispec.Manifest{Config: children[0], Layers: children[1:]}); err != nil {
			return err
		}
	case IsIndex(desc.MediaType):
		if err := opts.Limits.checkIndex(desc, ocispec.Index{Manifests: children}); err != nil {
			return err
		}
	}
	if IsIndex(desc.MediaType) && !opts.AllPlatforms {
		children = slices.DeleteFunc(children, func(c ocispec.Descriptor) bool {
			return c.Platform != nil && !opts.Platform.Match(*c.Platform)
		})
	}
	for _, c := range children {
		if err := labelGraph(ctx, cs, c, opts, done); err != nil {
			return err
		}
	}
	if len(children) > 0 {
		labels := ChildLabels(desc, children)
		paths := make([]string, 0, len(labels))
		for k := range labels {
			paths = append(paths, "labels."+k)
		}
		if _, err := cs.Update(ctx, content.Info{Digest: desc.Digest, Labels: labels}, paths...); err != nil {
			return fmt.Errorf("label %s: %w", desc.Digest, err)
		}
	}
	done[desc.Digest] = true
	return nil
}

// archive is what readArchive found in a tar.
type archive struct {
	layout *ocispec.ImageLayout
	index  *ocispec.Index
	docker []dockerManifest
	// files are the regular files stored as blobs, by clean path.
	files map[string]ocispec.Descriptor
	// links are symbolic and hard links, clean path to clean target.
	links map[string]string
}

// file finds the blob stored for name, following links.
func (a *archive) file(name string) (ocispec.Descriptor, bool) {
	name = cleanPath(name)
	for range 16 {
		if d, ok := a.files[name]; ok {
			return d, true
		}
		target, ok := a.links[name]
		if !ok {
			break
		}
		name = target
	}
	return ocispec.Descriptor{}, false
}

func cleanPath(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// readArchive stores every regular file of the tar r in cs (blobs/<alg>/<hex>
// under that digest, checked; the others under the digest of their
// content) and parses the layout's and docker's JSON files. It refuses an
// archive of more entries than limits allow, a file larger than a layer
// may be and a JSON file larger than a manifest, before reading them.
func readArchive(ctx context.Context, cs content.Ingester, r io.Reader, limits Limits) (*archive, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	prefix := "import-" + hex.EncodeToString(rnd[:]) + "-"
	a := &archive{files: map[string]ocispec.Descriptor{}, links: map[string]string{}}
	tr := tarReader{tar.NewReader(r)}
	buf := make([]byte, sdk.ChunkSize)
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if n >= limits.MaxArchiveEntries {
			return nil, &LimitError{What: fmt.Sprintf("archive: more than %d entries", limits.MaxArchiveEntries), Key: "max_archive_entries", Limit: int64(limits.MaxArchiveEntries)}
		}
		name := cleanPath(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			a.links[name] = cleanPath(path.Join(path.Dir(name), hdr.Linkname))
			continue
		case tar.TypeLink:
			a.links[name] = cleanPath(hdr.Linkname)
			continue
		case tar.TypeReg:
		default:
			continue
		}
		switch name {
		case ocispec.ImageLayoutFile:
			a.layout = new(ocispec.ImageLayout)
			err = readJSON(tr, hdr, a.layout, limits)
		case ocispec.ImageIndexFile:
			a.index = new(ocispec.Index)
			err = readJSON(tr, hdr, a.index, limits)
		case dockerManifestFile:
			err = readJSON(tr, hdr, &a.docker, limits)
			if err == nil && a.docker == nil {
				a.docker = []dockerManifest{}
			}
		default:
			if hdr.Size > limits.MaxLayerSize {
				return nil, &LimitError{What: fmt.Sprintf("archive file %s: %d bytes", hdr.Name, hdr.Size), Key: "max_layer_size", Limit: limits.MaxLayerSize}
			}
			var desc ocispec.Descriptor
			desc, err = storeFile(ctx, cs, tr, hdr, name, prefix+fmt.Sprint(n), buf)
			a.files[name] = desc
		}
		if err != nil {
			return nil, err
		}
	}
	return a, nil
}

// tarReader reads the archive; one that ends inside a file or is corrupt
// there is InvalidArgument, as a bad header is.
type tarReader struct{ *tar.Reader }

func (t tarReader) Read(p []byte) (int, error) {
	n, err := t.Reader.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) {
		err = fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	return n, err
}

// readJSON decodes the tar file hdr names, of manifest size at most.
func readJSON(r io.Reader, hdr *tar.Header, v any, limits Limits) error {
	if hdr.Size > limits.MaxManifestSize {
		return &LimitError{What: fmt.Sprintf("archive file %s: %d bytes", hdr.Name, hdr.Size), Key: "max_manifest_size", Limit: limits.MaxManifestSize}
	}
	data, err := io.ReadAll(io.LimitReader(r, hdr.Size))
	if err != nil {
		return fmt.Errorf("archive file %s: %w", hdr.Name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("archive file %s: %v: %w", hdr.Name, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// storeFile writes the tar file hdr names into cs. A file under
// blobs/<alg>/<encoded> must have that digest; any other is stored under
// its content's digest (docker's layer.tar and config files).
func storeFile(ctx context.Context, cs content.Ingester, r io.Reader, hdr *tar.Header, name, ref string, buf []byte) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Size: hdr.Size}
	if parts := strings.Split(name, "/"); len(parts) == 3 && parts[0] == "blobs" {
		desc.Digest = digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[2])
		if err := desc.Digest.Validate(); err != nil {
			return desc, fmt.Errorf("archive file %s: not a blob name: %v: %w", name, err, errdefs.ErrInvalidArgument)
		}
	}
	w, err := cs.Writer(ctx, content.WithRef(ref), content.WithDescriptor(desc))
	if errdefs.IsAlreadyExists(err) {
		return desc, nil
	}
	if err != nil {
		return desc, fmt.Errorf("archive file %s: %w", name, err)
	}
	defer w.Close()
	abort := func(err error) (ocispec.Descriptor, error) {
		if ab, ok := cs.(content.IngestManager); ok {
			w.Close()
			ab.Abort(context.WithoutCancel(ctx), ref)
		}
		return desc, err
	}
	if _, err := io.CopyBuffer(w, io.LimitReader(r, hdr.Size), buf); err != nil {
		return abort(fmt.Errorf("archive file %s: %w", name, err))
	}
	if desc.Digest == "" {
		desc.Digest = w.Digest()
	}
	if err := w.Commit(ctx, hdr.Size, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
		if errdefs.IsFailedPrecondition(err) {
			err = fmt.Errorf("its content does not match its name (%v): %w", err, errdefs.ErrInvalidArgument)
		}
		return abort(fmt.Errorf("archive blob %s: %w", name, err))
	}
	return desc, nil
}
