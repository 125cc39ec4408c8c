package resolver

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// Factory builds a resolver at Configure.
type Factory func(ctx context.Context, env sdk.Env) (Resolver, error)

// Plugin defines a resolver plugin for sdk.Serve:
//
//	func main() { sdk.Serve(resolver.Plugin("docker", version, docker.New)) }
func Plugin(name, version string, factory Factory) sdk.Definition {
	def := sdk.Define(sdk.KindResolver, name, version, factory, func(s *grpc.Server, impl func(context.Context) (Resolver, error)) {
		RegisterServer(s, impl)
	})
	def.CapabilitiesOf = func(impl io.Closer) []string {
		var caps []string
		if _, ok := impl.(FileFetcher); ok {
			caps = append(caps, CapabilityFetchToFile)
		}
		if _, ok := impl.(CallCredentialsTaker); ok {
			caps = append(caps, CapabilityCallCredentials)
		}
		return caps
	}
	return def
}

// NewClient returns the Resolver served on conn. Its Close does not close
// conn, which belongs to whoever made it.
func NewClient(conn grpc.ClientConnInterface) Resolver {
	return &client{c: pluginv1.NewResolverClient(conn)}
}

// RegisterServer serves on srv the resolver impl returns for each call; impl
// may fail, e.g. before the plugin is configured. keeld registers its
// namespaced views through it; a plugin gets it through Plugin.
func RegisterServer(srv grpc.ServiceRegistrar, impl func(context.Context) (Resolver, error)) {
	pluginv1.RegisterResolverServer(srv, newServer(impl))
}
