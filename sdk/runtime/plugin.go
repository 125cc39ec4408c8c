package runtime

import (
	"context"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/proto/pluginv1"
)

// Factory builds a runtime at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Runtime, error)

// Plugin defines a runtime plugin for sdk.Serve:
//
//	func main() { sdk.Serve(runtime.Plugin("runc", version, runc.New)) }
func Plugin(name, version string, factory Factory) sdk.Definition {
	return sdk.Define(sdk.KindRuntime, name, version, factory, func(s *grpc.Server, impl func(context.Context) (Runtime, error)) {
		pluginv1.RegisterRuntimeServer(s, NewServer(impl))
	})
}

// NewClient returns the Runtime served on conn. Its Close does not close
// conn, which belongs to whoever made it.
func NewClient(conn grpc.ClientConnInterface) Runtime {
	return &client{c: pluginv1.NewRuntimeClient(conn)}
}
