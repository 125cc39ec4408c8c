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
	return sdk.Definition{
		Kind:    sdk.KindContent,
		Name:    name,
		Version: version,
		New: func(ctx context.Context, env sdk.Env) (io.Closer, error) {
			return factory(ctx, env)
		},
		Register: func(s *grpc.Server, impl func() (any, error)) {
			pluginv1.RegisterContentServer(s, NewServer(func(context.Context) (Store, error) {
				v, err := impl()
				if err != nil {
					return nil, err
				}
				return v.(Store), nil
			}))
		},
	}
}
