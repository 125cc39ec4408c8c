package snapshot

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// Factory builds a snapshotter at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Snapshotter, error)

// Plugin defines a snapshotter plugin for sdk.Serve.
func Plugin(name, version string, factory Factory) sdk.Definition {
	def := sdk.Define(sdk.KindSnapshotter, name, version, factory, func(s *grpc.Server, impl func(context.Context) (Snapshotter, error)) {
		RegisterServer(s, impl)
	})
	def.CapabilitiesOf = func(impl io.Closer) []string {
		if _, ok := impl.(Cleaner); ok {
			return []string{CapabilityCleanup}
		}
		return nil
	}
	return def
}

// NewClient returns the Snapshotter served on conn. It is how keeld and the
// CLI reach a snapshotter plugin or keeld's snapshot API.
func NewClient(conn grpc.ClientConnInterface) Snapshotter {
	return &client{c: pluginv1.NewSnapshotterClient(conn)}
}

// RegisterServer serves on srv the snapshotter impl returns for each call; impl
// may fail, e.g. before the plugin is configured. keeld registers its
// namespaced views through it; a plugin gets it through Plugin.
func RegisterServer(srv grpc.ServiceRegistrar, impl func(context.Context) (Snapshotter, error)) {
	pluginv1.RegisterSnapshotterServer(srv, newServer(impl))
}
