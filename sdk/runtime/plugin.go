package runtime

import (
	"context"
	"io"

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
	return sdk.Definition{
		Kind:    sdk.KindRuntime,
		Name:    name,
		Version: version,
		New: func(ctx context.Context, env sdk.Env) (io.Closer, error) {
			return factory(ctx, env)
		},
		Register: func(s *grpc.Server, impl func() (any, error)) {
			pluginv1.RegisterRuntimeServer(s, NewServer(func(context.Context) (Runtime, error) {
				v, err := impl()
				if err != nil {
					return nil, err
				}
				return v.(Runtime), nil
			}))
		},
	}
}

// NewClient returns the Runtime served on conn. Its Close does not close
// conn, which belongs to whoever made it.
func NewClient(conn grpc.ClientConnInterface) Runtime {
	return &client{c: pluginv1.NewRuntimeClient(conn)}
}
