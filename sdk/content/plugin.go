package content

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// Factory builds a content store at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Store, error)

// Plugin defines a content plugin for sdk.Serve:
//
//	func main() { sdk.Serve(content.Plugin("local", version, local.New)) }
func Plugin(name, version string, factory Factory) sdk.Definition {
	def := sdk.Define(sdk.KindContent, name, version, factory, func(s *grpc.Server, impl func(context.Context) (Store, error)) {
		RegisterServer(s, impl)
	})
	def.CapabilitiesOf = func(impl io.Closer) []string {
		var caps []string
		if _, ok := impl.(BlobPather); ok {
			caps = append(caps, CapabilityBlobPath)
		}
		if _, ok := impl.(IngestPather); ok {
			caps = append(caps, CapabilityIngestPath)
		}
		return caps
	}
	return def
}

// RegisterServer serves on srv the store impl returns for each call; impl
// may fail, e.g. before the plugin is configured. keeld registers its
// namespaced views through it; a plugin gets it through Plugin.
func RegisterServer(srv grpc.ServiceRegistrar, impl func(context.Context) (Store, error)) {
	pluginv1.RegisterContentServer(srv, newServer(impl))
}
