package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/mount"
)

// Push statuses of PushProgress.
const (
	PushPushing = "pushing" // Offset bytes of the blob sent so far
	PushExists  = "exists"  // the registry had it (or mounted it from another repository)
	PushDone    = "done"
)

// PushProgress is one step of a push, for one blob or manifest.
type PushProgress struct {
	Desc   ocispec.Descriptor
	Status string
	Offset int64
}

// PushOpt tunes a Push.
type PushOpt func(*pushOptions)

type pushOptions struct {
	resolver string
	local    string
	progress func(PushProgress)
}

// WithPushResolver names the resolver plugin a Push goes through (keeld's
// only one when not given).
func WithPushResolver(name string) PushOpt { return func(o *pushOptions) { o.resolver = name } }

// WithPushImage pushes the local image record name (the reference itself
// when not given).
func WithPushImage(name string) PushOpt { return func(o *pushOptions) { o.local = name } }

// WithPushProgress calls fn for every step keeld reports: a blob starting,
// advancing, found on the registry, or done.
func WithPushProgress(fn func(PushProgress)) PushOpt {
	return func(o *pushOptions) { o.progress = fn }
}

// Push has keeld upload the image ref (or the one WithPushImage names) to
// the registry of ref through a resolver plugin: only what the registry
// lacks, blobs first, the manifest or index under ref last.
func (c *Client) Push(ctx context.Context, ref string, opts ...PushOpt) error {
	var o pushOptions
	for _, opt := range opts {
		opt(&o)
	}
	var cc grpc.ClientConnInterface = c.conn
	if o.resolver != "" {
		cc = metadataConn{cc: c.conn, key: keelv1.MetadataResolver, value: o.resolver}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := keelv1.NewExchangeClient(cc).Push(ctx, &keelv1.PushRequest{Ref: ref, Name: o.local})
	if err != nil {
		return err
	}
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if o.progress != nil {
			o.progress(PushProgress{Desc: exchangeDescriptor(p.Desc), Status: p.Status, Offset: p.Offset})
		}
	}
}

func exchangeDescriptor(d *keelv1.Descriptor) ocispec.Descriptor {
	if d == nil {
		return ocispec.Descriptor{}
	}
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: digest.Digest(d.Digest), Size: d.Size, Annotations: d.Annotations}
}

// ExportOpt tunes an Export.
type ExportOpt func(*keelv1.ExportRequest)

// WithExportAllPlatforms fails the export unless every manifest of an
// index is stored; without it an index goes with the manifests that are.
func WithExportAllPlatforms() ExportOpt {
	return func(r *keelv1.ExportRequest) { r.AllPlatforms = true }
}

// Export writes an OCI image layout tar of the images names to w, streamed
// from keeld: oci-layout, index.json naming each image
// (org.opencontainers.image.ref.name), blobs/sha256/….
func (c *Client) Export(ctx context.Context, w io.Writer, names []string, opts ...ExportOpt) error {
	req := &keelv1.ExportRequest{Names: names}
	for _, opt := range opts {
		opt(req)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := keelv1.NewExchangeClient(c.conn).Export(ctx, req)
	if err != nil {
		return err
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(chunk.Data); err != nil {
			return fmt.Errorf("export: write: %w", err)
		}
	}
}

// ImportOpt tunes an Import.
type ImportOpt func(*importOptions)

type importOptions struct {
	keelv1.ImportOptions
	snapshotter string
}

// WithImportAllPlatforms keeps every platform of an imported index; without
// it only keeld's platform is kept, the rest left to garbage collection.
func WithImportAllPlatforms() ImportOpt {
	return func(o *importOptions) { o.AllPlatforms = true }
}

// WithImportBaseName names images the archive leaves unnamed
// name@<digest> ("import" by default).
func WithImportBaseName(name string) ImportOpt {
	return func(o *importOptions) { o.BaseName = name }
}

// WithImportUnpack unpacks each imported image (its manifest for keeld's
// platform; an image with none is only stored) onto the snapshotter named
// ("" for keeld's default), as a pull with WithPullUnpack does.
func WithImportUnpack(snapshotter string) ImportOpt {
	return func(o *importOptions) {
		o.Unpack = true
		o.snapshotter = snapshotter
	}
}

// Import streams an image archive — an OCI image layout tar or a `docker
// save` tar — from r to keeld, which stores its blobs (digests checked)
// and records its images (and unpacks them, WithImportUnpack), and returns
// them. An archive keeld refuses leaves no image record behind.
func (c *Client) Import(ctx context.Context, r io.Reader, opts ...ImportOpt) ([]Image, error) {
	o := &importOptions{}
	for _, opt := range opts {
		opt(o)
	}
	if o.snapshotter != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, keelv1.MetadataSnapshotter, o.snapshotter)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := keelv1.NewExchangeClient(c.conn).Import(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&keelv1.ImportRequest{Msg: &keelv1.ImportRequest_Options{Options: &o.ImportOptions}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	buf := make([]byte, sdk.ChunkSize)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&keelv1.ImportRequest{Msg: &keelv1.ImportRequest_Data{Data: buf[:n]}}); err != nil {
				if errors.Is(err, io.EOF) {
					break // keeld ended the call: CloseAndRecv says why
				}
				return nil, err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("import: read: %w", rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	out := make([]Image, len(resp.Images))
	for i, img := range resp.Images {
		out[i] = imageFromProto(img)
	}
	return out, nil
}

// MountOpt tunes MountImage.
type MountOpt func(*mountOptions)

type mountOptions struct {
	platform    string
	snapshotter string
}

// WithMountPlatform picks the manifest of an index for "os/arch[/variant]"
// (keeld's platform by default).
func WithMountPlatform(p string) MountOpt { return func(o *mountOptions) { o.platform = p } }

// WithMountSnapshotter names the snapshotter the image is unpacked on
// (keeld's default when not given).
func WithMountSnapshotter(name string) MountOpt {
	return func(o *mountOptions) { o.snapshotter = name }
}

// MountImage mounts a read-only view of the unpacked image name's root
// filesystem on dir, which must be on the host keeld runs on; the caller
// needs the privilege to mount. FailedPrecondition when the image is not
// unpacked on the snapshotter. UnmountImage undoes it.
func (c *Client) MountImage(ctx context.Context, name, dir string, opts ...MountOpt) error {
	var o mountOptions
	for _, opt := range opts {
		opt(&o)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	var cc grpc.ClientConnInterface = c.conn
	if o.snapshotter != "" {
		cc = metadataConn{cc: c.conn, key: keelv1.MetadataSnapshotter, value: o.snapshotter}
	}
	resp, err := keelv1.NewImageMountsClient(cc).Mount(ctx, &keelv1.MountImageRequest{Name: name, Target: dir, Platform: o.platform})
	if err != nil {
		return err
	}
	ms := make([]mount.Mount, len(resp.Mounts))
	for i, m := range resp.Mounts {
		ms[i] = mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options}
	}
	if err := mount.All(ms, dir); err != nil {
		_, uerr := keelv1.NewImageMountsClient(c.conn).Unmount(context.WithoutCancel(ctx), &keelv1.UnmountImageRequest{Target: dir})
		return errors.Join(fmt.Errorf("mount image %s on %s: %w", name, dir, err), uerr)
	}
	return nil
}

// UnmountImage unmounts dir, which MountImage mounted, and removes the
// view behind it. NotFound when dir has no image view.
func (c *Client) UnmountImage(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := mount.Unmount(dir); err != nil {
		return err
	}
	if _, err := keelv1.NewImageMountsClient(c.conn).Unmount(ctx, &keelv1.UnmountImageRequest{Target: dir}); err != nil {
		return err
	}
	return nil
}
