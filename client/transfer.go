package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/descriptor"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// BlobState is where a blob (or manifest) of a pull or a push is: a pull's
// goes BlobWaiting, BlobDownloading, BlobDone, or straight to BlobExists
// when it is stored already; a push's goes BlobPushing, BlobDone, or to
// BlobExists when the registry has it. String gives its name ("waiting",
// "downloading", "pushing", "done", "exists").
type BlobState int32

// Blob states, as keeld sends them.
const (
	BlobWaiting     = BlobState(keelv1.BlobState_BLOB_STATE_WAITING)
	BlobDownloading = BlobState(keelv1.BlobState_BLOB_STATE_DOWNLOADING)
	BlobPushing     = BlobState(keelv1.BlobState_BLOB_STATE_PUSHING)
	BlobDone        = BlobState(keelv1.BlobState_BLOB_STATE_DONE)
	BlobExists      = BlobState(keelv1.BlobState_BLOB_STATE_EXISTS)
)

// String is the state's name on the wire, lower case and without its
// BLOB_STATE_ prefix: "waiting", "downloading", "pushing", "done", "exists".
func (s BlobState) String() string {
	return strings.ToLower(strings.TrimPrefix(keelv1.BlobState(s).String(), "BLOB_STATE_"))
}

// PullOpt tunes a Pull.
type PullOpt func(*pullOptions)

type pullOptions struct {
	unpack       bool
	platform     string
	allPlatforms bool
	snapshotter  string
	resolver     string
	progress     func(PullProgress)
	credentials  resolver.Credentials
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

// WithPullCredentials logs in to the reference's registry with c for this
// pull only, over the resolver's configured credentials (never sent to a
// mirror). The pull fails with FailedPrecondition when the resolver does
// not take credentials with a call (no resolver.CapabilityCallCredentials).
func WithPullCredentials(c resolver.Credentials) PullOpt {
	return func(o *pullOptions) { o.credentials = c }
}

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
	// State is BlobWaiting, BlobDownloading, BlobDone (stored, size and
	// digest checked) or BlobExists (stored already, not fetched).
	State BlobState
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
	ctx = scoped(ctx, keelv1.Scope{Resolver: o.resolver, Snapshotter: o.snapshotter})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := keelv1.NewTransferClient(c.conn).Pull(ctx, &keelv1.PullRequest{
		Ref: ref, Platform: o.platform, AllPlatforms: o.allPlatforms, Unpack: o.unpack,
		Credentials: resolver.CredentialsToProto(resolver.WithCredentials(ctx, o.credentials)),
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
				o.progress(PullProgress{Blob: &PullBlob{Desc: descriptor.FromProto(b.Desc), Role: b.Role, State: BlobState(b.State), Offset: b.Offset, ResumedFrom: b.ResumedFrom}})
			}
		case *keelv1.PullProgress_Layer:
			if o.progress != nil {
				l := ev.Layer
				o.progress(PullProgress{Layer: &PullLayer{Index: int(l.Index), Desc: descriptor.FromProto(l.Desc), DiffID: digest.Digest(l.DiffId),
					ChainID: digest.Digest(l.ChainId), Skipped: l.Skipped, Snapshotter: l.Snapshotter}})
			}
		}
	}
}

// FetchOpt tunes a Fetch.
type FetchOpt func(*fetchOptions)

type fetchOptions struct{ resolver string }

// WithResolver names the resolver plugin a Fetch goes through (keeld's
// only one when not given).
func WithResolver(name string) FetchOpt { return func(o *fetchOptions) { o.resolver = name } }

// FetchResult is what a Fetch did.
type FetchResult struct {
	// ResumedFrom is where a partial ingest left by an earlier fetch of the
	// blob had got to; 0 for a fresh fetch or a blob stored already.
	ResumedFrom int64
}

// Fetch has keeld copy desc, a blob or manifest of ref, from its registry
// through a resolver plugin into the content store of the call's
// namespace, resuming an interrupted fetch of the same blob. It returns
// once the blob is committed, its size and digest checked.
func (c *Client) Fetch(ctx context.Context, ref string, desc ocispec.Descriptor, opts ...FetchOpt) (FetchResult, error) {
	var o fetchOptions
	for _, opt := range opts {
		opt(&o)
	}
	var cc grpc.ClientConnInterface = c.conn
	if o.resolver != "" {
		cc = scopedConn{cc: c.conn, scope: keelv1.Scope{Resolver: o.resolver}}
	}
	resp, err := keelv1.NewTransferClient(cc).Fetch(ctx, &keelv1.FetchRequest{Ref: ref, Desc: descriptor.ToProto(desc)})
	if err != nil {
		return FetchResult{}, err
	}
	return FetchResult{ResumedFrom: resp.ResumedFrom}, nil
}

// PushProgress is one step of a push, for one blob or manifest.
type PushProgress struct {
	Desc ocispec.Descriptor
	// State is BlobPushing (Offset bytes of the blob sent so far),
	// BlobExists (the registry had it, or mounted it from another
	// repository) or BlobDone.
	State  BlobState
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
		cc = scopedConn{cc: c.conn, scope: keelv1.Scope{Resolver: o.resolver}}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := keelv1.NewTransferClient(cc).Push(ctx, &keelv1.PushRequest{Ref: ref, Name: o.local})
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
			o.progress(PushProgress{Desc: descriptor.FromProto(p.Desc), State: BlobState(p.State), Offset: p.Offset})
		}
	}
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
	stream, err := keelv1.NewTransferClient(c.conn).Export(ctx, req)
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
	ctx = scoped(ctx, keelv1.Scope{Snapshotter: o.snapshotter})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := keelv1.NewTransferClient(c.conn).Import(ctx)
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
