package resolver

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/proto/pluginv1"
)

// Factory builds a resolver at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Resolver, error)

// Plugin defines a resolver plugin for sdk.Serve:
//
//	func main() { sdk.Serve(resolver.Plugin("docker", version, docker.New)) }
func Plugin(name, version string, factory Factory) sdk.Definition {
	return sdk.Definition{
		Kind:    sdk.KindResolver,
		Name:    name,
		Version: version,
		New: func(ctx context.Context, env sdk.Env) (io.Closer, error) {
			return factory(ctx, env)
		},
		Register: func(s *grpc.Server, impl func() (any, error)) {
			pluginv1.RegisterResolverServer(s, NewServer(func(context.Context) (Resolver, error) {
				v, err := impl()
				if err != nil {
					return nil, err
				}
				return v.(Resolver), nil
			}))
		},
	}
}

// NewClient returns the Resolver served on conn. Its Close does not close
// conn, which belongs to whoever made it.
func NewClient(conn grpc.ClientConnInterface) Resolver {
	return &client{c: pluginv1.NewResolverClient(conn)}
}
