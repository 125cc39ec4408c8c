package content

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/proto/pluginv1"
)

// Factory builds a content store at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Store, error)

// Plugin defines a content plugin for sdk.Serve:
//
//	func main() { sdk.Serve(content.Plugin("local", version, local.New)) }
func Plugin(name, version string, factory Factory) sdk.Definition {
	def := sdk.Define(sdk.KindContent, name, version, factory, func(s *grpc.Server, impl func(context.Context) (Store, error)) {
		pluginv1.RegisterContentServer(s, NewServer(impl))
	})
	def.CapabilitiesOf = func(impl io.Closer) []string {
		if _, ok := impl.(BlobPather); ok {
			return []string{CapabilityBlobPath}
		}
		return nil
	}
	return def
}
