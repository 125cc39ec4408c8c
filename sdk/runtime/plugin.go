package runtime

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// Factory builds a runtime at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Runtime, error)

// Plugin defines a runtime plugin for sdk.Serve:
//
//	func main() { sdk.Serve(runtime.Plugin("runc", version, runc.New)) }
func Plugin(name, version string, factory Factory) sdk.Definition {
	def := sdk.Define(sdk.KindRuntime, name, version, factory, func(s *grpc.Server, impl func(context.Context) (Runtime, error)) {
		RegisterServer(s, impl)
	})
	def.CapabilitiesOf = func(impl io.Closer) []string {
		if _, ok := impl.(LogReopener); ok {
			return []string{CapabilityReopenLog}
		}
		return nil
	}
	return def
}

// NewClient returns the Runtime served on conn. Its Close does not close
// conn, which belongs to whoever made it.
func NewClient(conn grpc.ClientConnInterface) Runtime {
	return &client{c: pluginv1.NewRuntimeClient(conn)}
}

// RegisterServer serves on srv the runtime impl returns for each call; impl
// may fail, e.g. before the plugin is configured. keeld registers its
// namespaced views through it; a plugin gets it through Plugin.
func RegisterServer(srv grpc.ServiceRegistrar, impl func(context.Context) (Runtime, error)) {
	pluginv1.RegisterRuntimeServer(srv, newServer(impl))
}
