package server

import (
	"context"
	"fmt"
	"time"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/check"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/images"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/descriptor"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// withLease returns ctx holding what the call makes in a lease: the
// caller's, or a new one (labelled with labels) that done removes.
func (s *Server) withLease(ctx context.Context, labels map[string]string) (_ context.Context, done func() error, _ error) {
	if _, ok := scope.Lease(ctx); ok {
		return ctx, func() error { return nil }, nil
	}
	l := metadata.Lease{Labels: map[string]string{gc.LabelExpire: time.Now().Add(pullLeaseExpiry).UTC().Format(time.RFC3339)}}
	for k, v := range labels {
		l.Labels[k] = v
	}
	l, err := s.db.Leases().Create(ctx, l)
	if err != nil {
		return nil, nil, err
	}
	return scope.WithLease(ctx, l.ID), func() error {
		return s.db.Leases().Delete(context.WithoutCancel(ctx), l.ID)
	}, nil
}

// unpacked is what unpackImage did.
type unpacked struct {
	snapshotter     string
	res             images.PullResult
	applied, exists int
}

// unpackImage unpacks the stored image img on the call's snapshotter for
// platform ("" for keeld's).
func (s *Server) unpackImage(ctx context.Context, img metadata.Image, platform string) (out unpacked, err error) {
	if s.content == nil {
		return out, fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	var opts images.PullOptions
	if platform != "" {
		if opts.Platform, err = images.ParsePlatform(platform); err != nil {
			return out, err
		}
	}
	sn, err := s.snapshotter(ctx)
	if err != nil {
		return out, err
	}
	out.snapshotter = scope.Snapshotter(ctx)
	opts.Progress = func(p images.Progress) {
		if p.Layer != nil && p.Layer.Skipped {
			out.exists++
		} else if p.Layer != nil {
			out.applied++
		}
	}
	ctx, done, err := s.withLease(ctx, map[string]string{"keel.io/unpack": img.Name})
	if err != nil {
		return out, err
	}
	defer func() {
		if derr := done(); derr != nil && err == nil {
			err = derr
		}
	}()
	puller := &images.Puller{
		Content:         s.content,
		Snapshotter:     sn,
		SnapshotterName: out.snapshotter,
		MountDir:        check.PullDir(s.cfg.State),
		Limits:          imageLimits(s.cfg),
		Logger:          s.logger.Named("unpack"),
	}
	if out.res, err = puller.Unpack(ctx, img.Target, opts); err != nil {
		return out, fmt.Errorf("unpack %s on %s: %w", img.Name, out.snapshotter, err)
	}
	return out, nil
}

func (i imagesService) Unpack(ctx context.Context, req *keelv1.UnpackImageRequest) (*keelv1.UnpackImageResponse, error) {
	img, err := images.Lookup(ctx, i.store, req.Name)
	if err != nil {
		return nil, err
	}
	u, err := i.s.unpackImage(ctx, img, req.Platform)
	if err != nil {
		return nil, err
	}
	return &keelv1.UnpackImageResponse{
		Image: imageToProto(img), Snapshotter: u.snapshotter,
		Manifest: descriptor.ToProto(u.res.Unpacked), ChainId: u.res.ChainID.String(),
		LayersUnpacked: int32(u.applied), LayersSkipped: int32(u.exists),
	}, nil
}
