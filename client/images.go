package client

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/descriptor"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// Image is an image record of keeld: a name pointing at a target (a
// manifest or an index in the content store). It keeps its target and
// everything reachable from it through gc.ref labels from garbage
// collection.
type Image struct {
	Name      string
	Target    ocispec.Descriptor
	Labels    map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// DeleteOpt tunes a delete.
type DeleteOpt func(*deleteOptions)

type deleteOptions struct{ sync bool }

// WithSyncDelete makes a delete return after the garbage collection it
// triggers has run, so what it freed is gone.
func WithSyncDelete() DeleteOpt { return func(o *deleteOptions) { o.sync = true } }

func applyDelete(opts []DeleteOpt) deleteOptions {
	var o deleteOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// CreateImage records img in the namespace. AlreadyExists when the name is
// taken.
func (c *Client) CreateImage(ctx context.Context, img Image) (Image, error) {
	resp, err := keelv1.NewImagesClient(c.conn).Create(ctx, &keelv1.CreateImageRequest{Image: imageToProto(img)})
	if err != nil {
		return Image{}, err
	}
	return imageFromProto(resp), nil
}

// GetImage returns the image name refers to, taken as pull takes it: the
// record of that exact name, else of its normalized form ("busybox" is
// docker.io/library/busybox:latest), else for repo@digest the record of
// repo whose target is that digest. NotFound when none. DeleteImage,
// Push, Export and MountImage find images the same way.
func (c *Client) GetImage(ctx context.Context, name string) (Image, error) {
	resp, err := keelv1.NewImagesClient(c.conn).Get(ctx, &keelv1.GetImageRequest{Name: name})
	if err != nil {
		return Image{}, err
	}
	return imageFromProto(resp), nil
}

// ListImages returns the images matching any of filters (containerd's
// syntax over name, target.digest, target.mediatype, target.size,
// labels.<key>), by name.
func (c *Client) ListImages(ctx context.Context, filters ...string) ([]Image, error) {
	resp, err := keelv1.NewImagesClient(c.conn).List(ctx, &keelv1.ListImagesRequest{Filters: filters})
	if err != nil {
		return nil, err
	}
	out := make([]Image, len(resp.Images))
	for i, p := range resp.Images {
		out[i] = imageFromProto(p)
	}
	return out, nil
}

// UpdateImage changes the fields of img.Name that fieldpaths name
// ("target", "labels", "labels.<key>", "annotations"; none means target
// and labels). NotFound when absent.
func (c *Client) UpdateImage(ctx context.Context, img Image, fieldpaths ...string) (Image, error) {
	resp, err := keelv1.NewImagesClient(c.conn).Update(ctx, &keelv1.UpdateImageRequest{Image: imageToProto(img), FieldPaths: fieldpaths})
	if err != nil {
		return Image{}, err
	}
	return imageFromProto(resp), nil
}

// DeleteImage removes the image record name refers to (as GetImage finds
// it); keeld then collects what nothing else refers to (before returning,
// WithSyncDelete). NotFound when absent.
func (c *Client) DeleteImage(ctx context.Context, name string, opts ...DeleteOpt) error {
	o := applyDelete(opts)
	_, err := keelv1.NewImagesClient(c.conn).Delete(ctx, &keelv1.DeleteImageRequest{Name: name, Sync: o.sync})
	return err
}

// TagImage records dst pointing at src's target, with src's labels. Both
// names are taken as pull takes them: "busybox" is
// docker.io/library/busybox:latest. AlreadyExists when dst exists.
func (c *Client) TagImage(ctx context.Context, src, dst string) (Image, error) {
	img, err := c.GetImage(ctx, src)
	if err != nil {
		return Image{}, err
	}
	if dst == "" {
		return Image{}, fmt.Errorf("tag %s: target name is empty: %w", src, errdefs.ErrInvalidArgument)
	}
	// dst is named as pull would name it, so that the name typed finds it.
	if named, err := resolver.ParseReference(dst); err == nil {
		dst = reference.TagNameOnly(named).String()
	}
	img.Name = dst
	return c.CreateImage(ctx, img)
}

func imageToProto(img Image) *keelv1.Image {
	return &keelv1.Image{
		Name:   img.Name,
		Labels: img.Labels,
		Target: descriptor.ToProto(img.Target),
	}
}

func imageFromProto(p *keelv1.Image) Image {
	if p == nil {
		return Image{}
	}
	img := Image{Name: p.Name, Labels: p.Labels}
	if p.CreatedAt != nil {
		img.CreatedAt = p.CreatedAt.AsTime()
	}
	if p.UpdatedAt != nil {
		img.UpdatedAt = p.UpdatedAt.AsTime()
	}
	img.Target = descriptor.FromProto(p.Target)
	return img
}

// Unpacked is what UnpackImage did.
type Unpacked struct {
	Image       Image
	Snapshotter string
	// Manifest is the manifest unpacked, ChainID its top snapshot.
	Manifest ocispec.Descriptor
	ChainID  digest.Digest
	// Applied layers were unpacked by the call; Skipped ones were there.
	Applied, Skipped int
}

// UnpackImage unpacks the stored image name (found as GetImage finds it;
// for an index, the manifest for keeld's platform, or platform
// "os/arch[/variant]" when not empty) onto snapshotter ("" for keeld's
// default), skipping the layers unpacked there already: what an imported
// or pulled-without-unpack image needs before a container runs from it.
// NotFound when the image or a blob of it is not stored.
func (c *Client) UnpackImage(ctx context.Context, name, snapshotter, platform string) (Unpacked, error) {
	ctx = scoped(ctx, keelv1.Scope{Snapshotter: snapshotter})
	resp, err := keelv1.NewImagesClient(c.conn).Unpack(ctx, &keelv1.UnpackImageRequest{Name: name, Platform: platform})
	if err != nil {
		return Unpacked{}, err
	}
	return Unpacked{
		Image: imageFromProto(resp.Image), Snapshotter: resp.Snapshotter,
		Manifest: descriptor.FromProto(resp.Manifest), ChainID: digest.Digest(resp.ChainId),
		Applied: int(resp.LayersUnpacked), Skipped: int(resp.LayersSkipped),
	}, nil
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
		cc = scopedConn{cc: c.conn, scope: keelv1.Scope{Snapshotter: o.snapshotter}}
	}
	resp, err := keelv1.NewImagesClient(cc).Mount(ctx, &keelv1.MountImageRequest{Name: name, Target: dir, Platform: o.platform})
	if err != nil {
		return err
	}
	if err := mount.All(mount.FromProto(resp.Mounts), dir); err != nil {
		_, uerr := keelv1.NewImagesClient(c.conn).Unmount(context.WithoutCancel(ctx), &keelv1.UnmountImageRequest{Target: dir})
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
	if _, err := keelv1.NewImagesClient(c.conn).Unmount(ctx, &keelv1.UnmountImageRequest{Target: dir}); err != nil {
		return err
	}
	return nil
}
