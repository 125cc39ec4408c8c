package conformance

import (
	"context"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

var _ = addCLISuite(sdk.KindResolver, func(t T, path string, opts ...Option) {
	Resolver(t, BinaryResolver(path, opts...), opts...)
})

// BinaryResolver opens the resolver plugin executable at path as keeld
// does (see Binary).
func BinaryResolver(path string, opts ...Option) Opener[resolver.Resolver] {
	return Binary(path, sdk.KindResolver, wrapResolver, opts...)
}

// InProcessResolver opens the resolver factory builds inside the test
// process, across gRPC (see InProcess).
func InProcessResolver(factory resolver.Factory, opts ...Option) Opener[resolver.Resolver] {
	return InProcess(resolver.Plugin("conformance", "dev", factory), wrapResolver, opts...)
}

func wrapResolver(conn grpc.ClientConnInterface, stop func() error) resolver.Resolver {
	return &stoppingResolver{Resolver: resolver.NewClient(conn), stop: stop}
}

// stoppingResolver is the sdk client whose Close ends the plugin.
type stoppingResolver struct {
	resolver.Resolver
	stop func() error
}

var _ resolver.Resolver = (*stoppingResolver)(nil)

func (r *stoppingResolver) Close() error {
	err := r.Resolver.Close()
	if serr := r.stop(); err == nil {
		err = serr
	}
	return err
}

// Resolver runs the resolver suite against the plugins open opens.
//
// The cases here are the ones that hold for any resolver, with no registry
// behind it. The cases against a real registry (resolve by tag and digest,
// ranged and resumed fetches, push and AlreadyExists, credentials) come with
// the docker resolver's issue, which starts a registry for them.
func Resolver(t T, open Opener[resolver.Resolver], opts ...Option) {
	t.Helper()
	runCases(t, resolverCases(), open, buildOptions(opts))
}

func resolverCases() []testCase[resolver.Resolver] {
	return []testCase[resolver.Resolver]{
		{name: "ResolveInvalidReference", body: func(ctx context.Context, t T, env *caseEnv[resolver.Resolver]) {
			for _, ref := range []string{"UPPER/Case::bad", "", "example.com/app@sha256:nothex"} {
				_, _, err := env.P.Resolve(ctx, ref)
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("Resolve(%q): %v, want InvalidArgument", ref, err)
				}
			}
		}},
	}
}
