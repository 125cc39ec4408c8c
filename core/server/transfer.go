package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/grpc"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/check"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/images"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/metrics"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/descriptor"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// pullLeaseExpiry bounds how long what a pull keeld died in holds its
// content and snapshots: the lease outlives a crash, then expires. A
// running pull holds its lease (Leases.Hold) however long it takes.
const pullLeaseExpiry = 24 * time.Hour

// progressInterval spaces a blob's byte counts on the stream.
const progressInterval = 100 * time.Millisecond

// blobStateToProto is the wire value of each state of core/images.
var blobStateToProto = [...]keelv1.BlobState{
	images.BlobWaiting:     keelv1.BlobState_BLOB_STATE_WAITING,
	images.BlobDownloading: keelv1.BlobState_BLOB_STATE_DOWNLOADING,
	images.BlobPushing:     keelv1.BlobState_BLOB_STATE_PUSHING,
	images.BlobDone:        keelv1.BlobState_BLOB_STATE_DONE,
	images.BlobExists:      keelv1.BlobState_BLOB_STATE_EXISTS,
}

// transferService serves Transfer: images between keeld and registries
// (Pull, Fetch, Push, through the resolver a call names) and archives
// (Export, Import).
type transferService struct {
	keelv1.UnimplementedTransferServer
	s *Server
}

func (t transferService) Pull(req *keelv1.PullRequest, stream keelv1.Transfer_PullServer) error {
	m := t.s.keelMetrics.StartPull()
	err := t.pull(stream.Context(), req, stream, m)
	m.Done(err)
	return err
}

func (t transferService) pull(ctx context.Context, req *keelv1.PullRequest, stream keelv1.Transfer_PullServer, m *metrics.Pull) (err error) {
	s := t.s
	if req.Ref == "" {
		return fmt.Errorf("pull needs a reference: %w", errdefs.ErrInvalidArgument)
	}
	if len(req.Ref) > maxRefLength {
		return fmt.Errorf("reference %.64q...: longer than %d bytes: %w", req.Ref, maxRefLength, errdefs.ErrInvalidArgument)
	}
	// Refused here, before any plugin or registry is asked.
	if _, err := resolver.ParseReference(req.Ref); err != nil {
		return err
	}
	if s.content == nil {
		return fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	ctx = resolver.CredentialsFromProto(ctx, req.Credentials)
	r, err := s.resolver(ctx)
	if err != nil {
		return err
	}
	opts := images.PullOptions{AllPlatforms: req.AllPlatforms, Unpack: req.Unpack}
	if req.Platform != "" {
		if opts.Platform, err = images.ParsePlatform(req.Platform); err != nil {
			return err
		}
	}
	puller := &images.Puller{
		Resolver:               r,
		Content:                s.content,
		MountDir:               check.PullDir(s.cfg.State),
		MaxConcurrentDownloads: s.cfg.MaxConcurrentDownloads,
		Limits:                 imageLimits(s.cfg),
		Logger:                 s.logger.Named("pull"),
	}
	if req.Unpack {
		if puller.Snapshotter, err = s.snapshotter(ctx); err != nil {
			return err
		}
		puller.SnapshotterName = scope.Snapshotter(ctx)
	}

	// Everything the pull writes is held by a lease until the image record
	// holds it: the caller's, or one made (and removed) here.
	if _, ok := scope.Lease(ctx); !ok {
		l, err := s.db.Leases().Create(ctx, metadata.Lease{Labels: map[string]string{
			gc.LabelExpire: time.Now().Add(pullLeaseExpiry).UTC().Format(time.RFC3339),
			"keel.io/pull": req.Ref,
		}})
		if err != nil {
			return err
		}
		ctx = scope.WithLease(ctx, l.ID)
		defer func() {
			if derr := s.db.Leases().Delete(context.WithoutCancel(ctx), l.ID); derr != nil && err == nil {
				err = derr
			}
		}()
	}
	// The caller's lease too is not collected under the pull, expired or
	// not: a slow pull is not an abandoned one.
	lid, _ := scope.Lease(ctx)
	release, err := s.db.Leases().Hold(ctx, lid)
	if err != nil {
		return err
	}
	defer release()

	// Byte counts are spaced out; state changes always go.
	last := map[digest.Digest]time.Time{}
	var sendErr error
	opts.Progress = func(pr images.Progress) {
		if sendErr != nil {
			return
		}
		var msg *keelv1.PullProgress
		switch {
		case pr.Blob != nil:
			b := pr.Blob
			if b.State == images.BlobDownloading && b.Offset != b.ResumedFrom {
				if now := time.Now(); now.Sub(last[b.Desc.Digest]) < progressInterval {
					return
				} else {
					last[b.Desc.Digest] = now
				}
			}
			msg = &keelv1.PullProgress{Event: &keelv1.PullProgress_Blob{Blob: &keelv1.PullBlobProgress{
				Desc: descriptor.ToProto(b.Desc), Role: b.Role, State: blobStateToProto[b.State], Offset: b.Offset, ResumedFrom: b.ResumedFrom,
			}}}
		case pr.Layer != nil:
			l := pr.Layer
			msg = &keelv1.PullProgress{Event: &keelv1.PullProgress_Layer{Layer: &keelv1.PullLayerUnpacked{
				Index: int32(l.Index), Desc: descriptor.ToProto(l.Desc), DiffId: l.DiffID.String(), ChainId: l.ChainID.String(),
				Skipped: l.Skipped, Snapshotter: puller.SnapshotterName,
			}}}
		default:
			return
		}
		sendErr = stream.Send(msg)
	}
	opts.Progress = m.Progress(opts.Progress)
	res, err := puller.Pull(ctx, req.Ref, opts)
	if err != nil {
		return err
	}
	if sendErr != nil {
		return sendErr
	}
	// The record last: once it exists, it holds the whole graph.
	img := metadata.Image{Name: res.Name, Target: res.Target}
	rec, err := s.images().Create(ctx, img)
	if errdefs.IsAlreadyExists(err) {
		rec, err = s.images().Update(ctx, img, "target")
	}
	if err != nil {
		return fmt.Errorf("pull %s: record the image: %w", req.Ref, err)
	}
	done := &keelv1.PullDone{Image: imageToProto(rec), Snapshotter: puller.SnapshotterName}
	for _, m := range res.Manifests {
		done.Manifests = append(done.Manifests, descriptor.ToProto(m))
	}
	if res.ChainID != "" {
		done.Unpacked, done.ChainId = descriptor.ToProto(res.Unpacked), res.ChainID.String()
	} else {
		done.Snapshotter = ""
	}
	s.logger.Debug("pulled", "ref", req.Ref, "name", res.Name, "digest", res.Target.Digest,
		"platform", req.Platform, "default_platform", platforms.DefaultString())
	return stream.Send(&keelv1.PullProgress{Event: &keelv1.PullProgress_Done{Done: done}})
}

func (t transferService) Fetch(ctx context.Context, req *keelv1.FetchRequest) (*keelv1.FetchResponse, error) {
	if req.Ref == "" || req.Desc == nil || req.Desc.Digest == "" {
		return nil, fmt.Errorf("fetch needs a reference and a descriptor with a digest: %w", errdefs.ErrInvalidArgument)
	}
	desc := descriptor.FromProto(req.Desc)
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("fetch %s: digest %q: %v: %w", req.Ref, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if t.s.content == nil {
		return nil, fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	r, err := t.s.resolver(ctx)
	if err != nil {
		return nil, err
	}
	// What a previous fetch left, for the answer; Fetch itself resumes it.
	var resumed int64
	if st, err := t.s.content.Status(ctx, images.IngestRef(desc)); err == nil && st.Offset <= desc.Size {
		resumed = st.Offset
	}
	if err := images.Fetch(ctx, r, t.s.content, req.Ref, desc); err != nil {
		return nil, err
	}
	return &keelv1.FetchResponse{ResumedFrom: resumed}, nil
}

func (t transferService) needContent() error {
	if t.s.content == nil {
		return fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	return nil
}

func (t transferService) Push(req *keelv1.PushRequest, stream grpc.ServerStreamingServer[keelv1.PushProgress]) error {
	ctx := stream.Context()
	if req.Ref == "" {
		return fmt.Errorf("push needs a reference: %w", errdefs.ErrInvalidArgument)
	}
	if err := t.needContent(); err != nil {
		return err
	}
	name := req.Name
	if name == "" {
		name = req.Ref
	}
	img, err := images.Lookup(ctx, t.s.db.Images(), name)
	if err != nil {
		return err
	}
	r, err := t.s.resolver(ctx)
	if err != nil {
		return err
	}
	err = images.Push(ctx, r, t.s.content, req.Ref, img.Target, images.PushOptions{
		Progress: func(p images.PushProgress) {
			// A failed send means the caller went: ctx ends the push.
			_ = stream.Send(&keelv1.PushProgress{Desc: descriptor.ToProto(p.Desc), State: blobStateToProto[p.State], Offset: p.Offset})
		},
	})
	return err
}

// chunkSender sends what is written to it as ExportChunks.
type chunkSender struct {
	stream grpc.ServerStreamingServer[keelv1.ExportChunk]
}

func (c chunkSender) Write(p []byte) (int, error) {
	// SendMsg encodes p before it returns, so the caller may reuse it.
	if err := c.stream.Send(&keelv1.ExportChunk{Data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (t transferService) Export(req *keelv1.ExportRequest, stream grpc.ServerStreamingServer[keelv1.ExportChunk]) error {
	ctx := stream.Context()
	if len(req.Names) == 0 {
		return fmt.Errorf("export needs at least one image: %w", errdefs.ErrInvalidArgument)
	}
	if err := t.needContent(); err != nil {
		return err
	}
	var imgs []images.Named
	for _, n := range req.Names {
		img, err := images.Lookup(ctx, t.s.db.Images(), n)
		if err != nil {
			return err
		}
		imgs = append(imgs, images.Named{Name: img.Name, Target: img.Target})
	}
	// Whole chunks make whole messages.
	w := bufio.NewWriterSize(chunkSender{stream: stream}, sdk.ChunkSize)
	if err := images.Export(ctx, t.s.content, w, imgs, images.ExportOptions{AllPlatforms: req.AllPlatforms}); err != nil {
		return err
	}
	return w.Flush()
}

// importReader reads the tar bytes of an Import stream.
type importReader struct {
	stream grpc.ClientStreamingServer[keelv1.ImportRequest, keelv1.ImportResponse]
	buf    []byte
}

func (r *importReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		if msg.GetOptions() != nil {
			return 0, fmt.Errorf("import: options after the data: %w", errdefs.ErrInvalidArgument)
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (t transferService) Import(stream grpc.ClientStreamingServer[keelv1.ImportRequest, keelv1.ImportResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("import: empty stream: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return fmt.Errorf("import: the first message must carry the options: %w", errdefs.ErrInvalidArgument)
	}
	if err := t.needContent(); err != nil {
		return err
	}
	list, err := images.Import(ctx, t.s.content, t.s.images(), &importReader{stream: stream}, images.ImportOptions{
		AllPlatforms: opts.AllPlatforms,
		BaseName:     opts.BaseName,
		Leases:       t.s.db.Leases(),
		Limits:       imageLimits(t.s.cfg),
	})
	if err != nil {
		return err
	}
	if opts.Unpack {
		for _, img := range list {
			// An image with no manifest for keeld's platform is stored but
			// cannot run here: nothing to unpack.
			if _, err := t.s.unpackImage(ctx, img, ""); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
		}
	}
	resp := &keelv1.ImportResponse{}
	for _, img := range list {
		resp.Images = append(resp.Images, imageToProto(img))
	}
	return stream.SendAndClose(resp)
}
