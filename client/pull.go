package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// PullOpt tunes a Pull.
type PullOpt func(*pullOptions)

type pullOptions struct {
	unpack       bool
	platform     string
	allPlatforms bool
	snapshotter  string
	resolver     string
	progress     func(PullProgress)
}

// WithPullUnpack unpacks the pulled image's layers into the snapshotter
// (WithPullSnapshotter, else keeld's default), ready to run.
func WithPullUnpack(o *pullOptions) { o.unpack = true }

// WithPlatform picks the platform ("os/arch[/variant]") of a
// multi-platform image to fetch and unpack; keeld's host's by default.
// The usual fallbacks apply: "linux/arm64" takes linux/arm64/v8.
func WithPlatform(platform string) PullOpt { return func(o *pullOptions) { o.platform = platform } }

// WithAllPlatforms fetches every platform of an index; only the one
// WithPlatform (or the host) picks is unpacked.
func WithAllPlatforms(o *pullOptions) { o.allPlatforms = true }

// WithPullSnapshotter names the snapshotter the layers are unpacked into.
func WithPullSnapshotter(name string) PullOpt { return func(o *pullOptions) { o.snapshotter = name } }

// WithPullResolver names the resolver plugin the pull goes through
// (keeld's only one by default).
func WithPullResolver(name string) PullOpt { return func(o *pullOptions) { o.resolver = name } }

// WithPullProgress calls fn for each progress message keeld streams, one
// call at a time, in order.
func WithPullProgress(fn func(PullProgress)) PullOpt {
	return func(o *pullOptions) { o.progress = fn }
}

// PullProgress is one step of a pull: a blob moving (Blob) or a layer
// unpacked (Layer).
type PullProgress struct {
	Blob  *PullBlob
	Layer *PullLayer
}

// PullBlob is a blob's state in a pull.
type PullBlob struct {
	Desc ocispec.Descriptor
	// Role is "index", "manifest", "config" or "layer".
	Role string
	// State is "waiting", "downloading", "done" (stored, size and digest
	// checked) or "exists" (stored already, not fetched).
	State string
	// Offset is the bytes stored so far; ResumedFrom where a partial
	// ingest an earlier pull left had got to.
	Offset      int64
	ResumedFrom int64
}

// PullLayer is a layer unpacked onto a snapshot named by its chain id, or
// found there already (Skipped).
type PullLayer struct {
	Index       int
	Desc        ocispec.Descriptor
	DiffID      digest.Digest
	ChainID     digest.Digest
	Skipped     bool
	Snapshotter string
}

// Pull has keeld pull ref from its registry through a resolver plugin:
// the manifest of the platform asked (or all of them), its config and
// layers into the content store, and with WithPullUnpack the layers into
// the snapshotter. Blobs stored already are not fetched again, and a
// pull interrupted earlier resumes from its partial ingests. It returns
// the image record, written once everything is stored.
//
// Errors: NotFound for an unknown reference or no manifest for the
// platform; InvalidArgument for a malformed reference or platform, a
// layer of an unknown media type or a refused layer (an entry escaping the
// root); NotImplemented for a foreign layer; FailedPrecondition for
// content whose digest, size or diff id is not what the image says, and
// for an image over one of keeld's limits (the error names the key of its
// config's limits block).
func (c *Client) Pull(ctx context.Context, ref string, opts ...PullOpt) (Image, error) {
	var o pullOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.resolver != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, keelv1.MetadataResolver, o.resolver)
	}
	if o.snapshotter != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, keelv1.MetadataSnapshotter, o.snapshotter)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := keelv1.NewPullClient(c.conn).Pull(ctx, &keelv1.PullRequest{
		Ref: ref, Platform: o.platform, AllPlatforms: o.allPlatforms, Unpack: o.unpack,
	})
	if err != nil {
		return Image{}, err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return Image{}, fmt.Errorf("pull %s: keeld ended the stream without the image: %w", ref, errdefs.ErrUnknown)
		}
		if err != nil {
			return Image{}, err
		}
		switch ev := msg.Event.(type) {
		case *keelv1.PullProgress_Done:
			return imageFromProto(ev.Done.Image), nil
		case *keelv1.PullProgress_Blob:
			if o.progress != nil {
				b := ev.Blob
				o.progress(PullProgress{Blob: &PullBlob{Desc: pullDescriptor(b.Desc), Role: b.Role, State: b.State, Offset: b.Offset, ResumedFrom: b.ResumedFrom}})
			}
		case *keelv1.PullProgress_Layer:
			if o.progress != nil {
				l := ev.Layer
				o.progress(PullProgress{Layer: &PullLayer{Index: int(l.Index), Desc: pullDescriptor(l.Desc), DiffID: digest.Digest(l.DiffId),
					ChainID: digest.Digest(l.ChainId), Skipped: l.Skipped, Snapshotter: l.Snapshotter}})
			}
		}
	}
}

func pullDescriptor(d *keelv1.Descriptor) ocispec.Descriptor {
	if d == nil {
		return ocispec.Descriptor{}
	}
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: digest.Digest(d.Digest), Size: d.Size, Annotations: d.Annotations}
}
