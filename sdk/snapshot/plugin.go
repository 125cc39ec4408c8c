package snapshot

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/proto/pluginv1"
)

// Factory builds a snapshotter at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Snapshotter, error)

// Plugin defines a snapshotter plugin for sdk.Serve.
func Plugin(name, version string, factory Factory) sdk.Definition {
	return sdk.Definition{
		Kind:    sdk.KindSnapshotter,
		Name:    name,
		Version: version,
		New: func(ctx context.Context, env sdk.Env) (io.Closer, error) {
			s, err := factory(ctx, env)
			if err != nil {
				return nil, err
			}
			return capable{s}, nil
		},
		Register: func(s *grpc.Server, impl func() (any, error)) {
			pluginv1.RegisterSnapshotterServer(s, NewServer(func(context.Context) (Snapshotter, error) {
				v, err := impl()
				if err != nil {
					return nil, err
				}
				return v.(capable).Snapshotter, nil
			}))
		},
	}
}

// capable announces the cleanup capability when the snapshotter has it.
type capable struct{ Snapshotter }

func (c capable) Capabilities() []string {
	if _, ok := c.Snapshotter.(Cleaner); ok {
		return []string{CapabilityCleanup}
	}
	return nil
}

// NewClient returns the Snapshotter served on conn. It is how keeld and the
// CLI reach a snapshotter plugin or keeld's snapshot API.
func NewClient(conn grpc.ClientConnInterface) Snapshotter {
	return &client{c: pluginv1.NewSnapshotterClient(conn)}
}
