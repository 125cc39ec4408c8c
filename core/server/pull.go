package server

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/check"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/images"
	"github.com/keel-runtime/keel/core/leases"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// pullLeaseExpiry bounds how long what a pull keeld died in holds its
// content and snapshots: the lease outlives a crash, then expires. A
// running pull holds its lease (Leases.Hold) however long it takes.
const pullLeaseExpiry = 24 * time.Hour

// progressInterval spaces a blob's byte counts on the stream.
const progressInterval = 100 * time.Millisecond

// pullService serves Pull.
type pullService struct {
	keelv1.UnimplementedPullServer
	s *Server
}

func (p pullService) Pull(req *keelv1.PullRequest, stream keelv1.Pull_PullServer) error {
	return p.pull(stream.Context(), req, stream)
}

func (p pullService) pull(ctx context.Context, req *keelv1.PullRequest, stream keelv1.Pull_PullServer) (err error) {
	s := p.s
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
		puller.SnapshotterName, _ = namespaces.Snapshotter(ctx)
		if puller.SnapshotterName == "" {
			puller.SnapshotterName = s.cfg.DefaultSnapshotter
		}
	}

	// Everything the pull writes is held by a lease until the image record
	// holds it: the caller's, or one made (and removed) here.
	if _, ok := leases.FromContext(ctx); !ok {
		l, err := s.db.Leases().Create(ctx, metadata.Lease{Labels: map[string]string{
			gc.LabelExpire: time.Now().Add(pullLeaseExpiry).UTC().Format(time.RFC3339),
			"keel.io/pull": req.Ref,
		}})
		if err != nil {
			return err
		}
		ctx = leases.WithLease(ctx, l.ID)
		defer func() {
			if derr := s.db.Leases().Delete(context.WithoutCancel(ctx), l.ID); derr != nil && err == nil {
				err = derr
			}
		}()
	}
	// The caller's lease too is not collected under the pull, expired or
	// not: a slow pull is not an abandoned one.
	lid, _ := leases.FromContext(ctx)
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
				Desc: descriptorToProto(b.Desc), Role: b.Role, State: b.State.String(), Offset: b.Offset, ResumedFrom: b.ResumedFrom,
			}}}
		case pr.Layer != nil:
			l := pr.Layer
			msg = &keelv1.PullProgress{Event: &keelv1.PullProgress_Layer{Layer: &keelv1.PullLayerUnpacked{
				Index: int32(l.Index), Desc: descriptorToProto(l.Desc), DiffId: l.DiffID.String(), ChainId: l.ChainID.String(),
				Skipped: l.Skipped, Snapshotter: puller.SnapshotterName,
			}}}
		default:
			return
		}
		sendErr = stream.Send(msg)
	}
	res, err := puller.Pull(ctx, req.Ref, opts)
	if err != nil {
		return err
	}
	if sendErr != nil {
		return sendErr
	}
	// The record last: once it exists, it holds the whole graph.
	img := metadata.Image{Name: res.Name, Target: res.Target}
	rec, err := s.db.Images().Create(ctx, img)
	if errdefs.IsAlreadyExists(err) {
		rec, err = s.db.Images().Update(ctx, img, "target")
	}
	if err != nil {
		return fmt.Errorf("pull %s: record the image: %w", req.Ref, err)
	}
	done := &keelv1.PullDone{Image: imageToProto(rec), Snapshotter: puller.SnapshotterName}
	for _, m := range res.Manifests {
		done.Manifests = append(done.Manifests, descriptorToProto(m))
	}
	if res.ChainID != "" {
		done.Unpacked, done.ChainId = descriptorToProto(res.Unpacked), res.ChainID.String()
	} else {
		done.Snapshotter = ""
	}
	s.logger.Debug("pulled", "ref", req.Ref, "name", res.Name, "digest", res.Target.Digest,
		"platform", req.Platform, "default_platform", platforms.DefaultString())
	return stream.Send(&keelv1.PullProgress{Event: &keelv1.PullProgress_Done{Done: done}})
}
