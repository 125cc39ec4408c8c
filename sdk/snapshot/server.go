package snapshot

import (
	"context"

	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
	"github.com/keel-runtime/keel/sdk/mount"
)

// walkBatch is how many infos one Walk message carries.
const walkBatch = 256

// server serves a Snapshotter over gRPC.
type server struct {
	pluginv1.UnimplementedSnapshotterServer
	impl func(context.Context) (Snapshotter, error)
}

// NewServer serves the snapshotter impl returns for a call; impl may fail,
// e.g. before the plugin is configured. keeld picks the backend from the
// call's context.
func newServer(impl func(context.Context) (Snapshotter, error)) *server {
	return &server{impl: impl}
}

var _ pluginv1.SnapshotterServer = (*server)(nil)

func (s *server) Prepare(ctx context.Context, req *pluginv1.PrepareSnapshotRequest) (*pluginv1.MountsResponse, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	ms, err := sn.Prepare(ctx, req.Key, req.Parent, WithLabels(req.Labels))
	if err != nil {
		return nil, err
	}
	return &pluginv1.MountsResponse{Mounts: mount.ToProto(ms)}, nil
}

func (s *server) View(ctx context.Context, req *pluginv1.PrepareSnapshotRequest) (*pluginv1.MountsResponse, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	ms, err := sn.View(ctx, req.Key, req.Parent, WithLabels(req.Labels))
	if err != nil {
		return nil, err
	}
	return &pluginv1.MountsResponse{Mounts: mount.ToProto(ms)}, nil
}

func (s *server) Mounts(ctx context.Context, req *pluginv1.SnapshotKeyRequest) (*pluginv1.MountsResponse, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	ms, err := sn.Mounts(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &pluginv1.MountsResponse{Mounts: mount.ToProto(ms)}, nil
}

func (s *server) Commit(ctx context.Context, req *pluginv1.CommitSnapshotRequest) (*pluginv1.Empty, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	return &pluginv1.Empty{}, sn.Commit(ctx, req.Name, req.Key, WithLabels(req.Labels))
}

func (s *server) Remove(ctx context.Context, req *pluginv1.SnapshotKeyRequest) (*pluginv1.Empty, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	return &pluginv1.Empty{}, sn.Remove(ctx, req.Key)
}

func (s *server) Stat(ctx context.Context, req *pluginv1.SnapshotKeyRequest) (*pluginv1.SnapshotInfo, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	info, err := sn.Stat(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return infoToProto(info), nil
}

func (s *server) Update(ctx context.Context, req *pluginv1.UpdateSnapshotRequest) (*pluginv1.SnapshotInfo, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	info, err := sn.Update(ctx, infoFromProto(req.Info), req.FieldPaths...)
	if err != nil {
		return nil, err
	}
	return infoToProto(info), nil
}

func (s *server) Usage(ctx context.Context, req *pluginv1.SnapshotKeyRequest) (*pluginv1.UsageResponse, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	u, err := sn.Usage(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &pluginv1.UsageResponse{Size: u.Size, Inodes: u.Inodes}, nil
}

func (s *server) Walk(req *pluginv1.WalkSnapshotsRequest, stream pluginv1.Snapshotter_WalkServer) error {
	sn, err := s.impl(stream.Context())
	if err != nil {
		return err
	}
	var batch []*pluginv1.SnapshotInfo
	err = sn.Walk(stream.Context(), func(_ context.Context, info Info) error {
		batch = append(batch, infoToProto(info))
		if len(batch) < walkBatch {
			return nil
		}
		err := stream.Send(&pluginv1.WalkSnapshotsResponse{Infos: batch})
		batch = nil
		return err
	}, req.Filters...)
	if err == nil && len(batch) > 0 {
		err = stream.Send(&pluginv1.WalkSnapshotsResponse{Infos: batch})
	}
	return err
}

func (s *server) Cleanup(ctx context.Context, _ *pluginv1.Empty) (*pluginv1.Empty, error) {
	sn, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	c, ok := sn.(Cleaner)
	if !ok {
		return nil, errdefs.ErrNotImplemented
	}
	return &pluginv1.Empty{}, c.Cleanup(ctx)
}

// infoToProto converts an Info for the wire.
func infoToProto(info Info) *pluginv1.SnapshotInfo {
	return &pluginv1.SnapshotInfo{
		Name:      info.Name,
		Parent:    info.Parent,
		Kind:      pluginv1.SnapshotKind(info.Kind),
		Labels:    info.Labels,
		CreatedAt: wire.UnixNano(info.Created),
		UpdatedAt: wire.UnixNano(info.Updated),
	}
}

// infoFromProto converts an Info from the wire.
func infoFromProto(p *pluginv1.SnapshotInfo) Info {
	if p == nil {
		return Info{}
	}
	return Info{
		Name:    p.Name,
		Parent:  p.Parent,
		Kind:    Kind(p.Kind),
		Labels:  p.Labels,
		Created: wire.Time(p.CreatedAt),
		Updated: wire.Time(p.UpdatedAt),
	}
}
