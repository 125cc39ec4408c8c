package snapshot

import (
	"context"
	"errors"
	"io"

	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/mount"
)

// client is a Snapshotter reached over gRPC.
type client struct {
	c pluginv1.SnapshotterClient
}

var (
	_ Snapshotter = (*client)(nil)
	_ Cleaner     = (*client)(nil)
)

func (c *client) Stat(ctx context.Context, key string) (Info, error) {
	resp, err := c.c.Stat(ctx, &pluginv1.SnapshotKeyRequest{Key: key})
	if err != nil {
		return Info{}, err
	}
	return infoFromProto(resp), nil
}

func (c *client) Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error) {
	resp, err := c.c.Update(ctx, &pluginv1.UpdateSnapshotRequest{Info: infoToProto(info), FieldPaths: fieldpaths})
	if err != nil {
		return Info{}, err
	}
	return infoFromProto(resp), nil
}

func (c *client) Usage(ctx context.Context, key string) (Usage, error) {
	resp, err := c.c.Usage(ctx, &pluginv1.SnapshotKeyRequest{Key: key})
	if err != nil {
		return Usage{}, err
	}
	return Usage{Size: resp.Size, Inodes: resp.Inodes}, nil
}

func (c *client) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	resp, err := c.c.Mounts(ctx, &pluginv1.SnapshotKeyRequest{Key: key})
	if err != nil {
		return nil, err
	}
	return mount.FromProto(resp.Mounts), nil
}

func (c *client) Prepare(ctx context.Context, key, parent string, opts ...Opt) ([]mount.Mount, error) {
	info, err := ApplyOpts(opts...)
	if err != nil {
		return nil, err
	}
	resp, err := c.c.Prepare(ctx, &pluginv1.PrepareSnapshotRequest{Key: key, Parent: parent, Labels: info.Labels})
	if err != nil {
		return nil, err
	}
	return mount.FromProto(resp.Mounts), nil
}

func (c *client) View(ctx context.Context, key, parent string, opts ...Opt) ([]mount.Mount, error) {
	info, err := ApplyOpts(opts...)
	if err != nil {
		return nil, err
	}
	resp, err := c.c.View(ctx, &pluginv1.PrepareSnapshotRequest{Key: key, Parent: parent, Labels: info.Labels})
	if err != nil {
		return nil, err
	}
	return mount.FromProto(resp.Mounts), nil
}

func (c *client) Commit(ctx context.Context, name, key string, opts ...Opt) error {
	info, err := ApplyOpts(opts...)
	if err != nil {
		return err
	}
	_, err = c.c.Commit(ctx, &pluginv1.CommitSnapshotRequest{Name: name, Key: key, Labels: info.Labels})
	return err
}

func (c *client) Remove(ctx context.Context, key string) error {
	_, err := c.c.Remove(ctx, &pluginv1.SnapshotKeyRequest{Key: key})
	return err
}

func (c *client) Walk(ctx context.Context, fn WalkFunc, filters ...string) error {
	// The child context ends the stream when fn stops the walk early.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.Walk(ctx, &pluginv1.WalkSnapshotsRequest{Filters: filters})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, info := range resp.Infos {
			if err := fn(ctx, infoFromProto(info)); err != nil {
				return err
			}
		}
	}
}

func (c *client) Cleanup(ctx context.Context) error {
	_, err := c.c.Cleanup(ctx, &pluginv1.Empty{})
	return err
}

// Close does nothing: the connection belongs to whoever made it.
func (c *client) Close() error { return nil }
