// Package scope carries a keel.v1 call's selectors (its namespace, lease,
// snapshotter and resolver) in its context, as one keelv1.Scope
// (keelv1.ScopeFromContext). keeld's interceptors read them from the
// call's gRPC metadata (the keelv1.Metadata* keys) and fill in keeld's
// defaults; code below reads each selector through its accessor here. A
// selector is checked where it is used, so a call that does not use one
// is not refused for it: the namespace name by
// namespaces.NamespaceRequired (InvalidArgument), the lease when something
// is attached to it (NotFound), the snapshotter and resolver when keeld
// picks the plugin (NotFound when none is configured by that name).
package scope

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// Namespace returns the namespace ctx is scoped to, if any.
func Namespace(ctx context.Context) (string, bool) {
	ns := keelv1.ScopeFromContext(ctx).Namespace
	return ns, ns != ""
}

// WithNamespace returns ctx scoped to namespace ns.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return keelv1.WithScope(ctx, func(s *keelv1.Scope) { s.Namespace = ns })
}

// Lease returns the lease ctx is scoped to, if any.
func Lease(ctx context.Context) (string, bool) {
	id := keelv1.ScopeFromContext(ctx).Lease
	return id, id != ""
}

// WithLease returns ctx scoped to lease id.
func WithLease(ctx context.Context, id string) context.Context {
	return keelv1.WithScope(ctx, func(s *keelv1.Scope) { s.Lease = id })
}

// Snapshotter returns the snapshotter ctx is scoped to: the one its call
// named, else keeld's default; "" when neither is known.
func Snapshotter(ctx context.Context) string { return keelv1.ScopeFromContext(ctx).Snapshotter }

// Resolver returns the resolver ctx is scoped to: the one its call named,
// else keeld's only one; "" when neither is known.
func Resolver(ctx context.Context) string { return keelv1.ScopeFromContext(ctx).Resolver }

// fromIncoming returns ctx scoped to the selectors its incoming gRPC
// metadata names, the others taken from defaults (and the namespace from
// keelv1.DefaultNamespace when defaults names none).
func fromIncoming(ctx context.Context, defaults keelv1.Scope) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	return keelv1.WithScope(ctx, func(s *keelv1.Scope) {
		*s = keelv1.ScopeFromMetadata(md).Or(defaults).Or(keelv1.Scope{Namespace: keelv1.DefaultNamespace})
	})
}

// UnaryServerInterceptor scopes each call to its selectors (fromIncoming).
func UnaryServerInterceptor(defaults keelv1.Scope) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(fromIncoming(ctx, defaults), req)
	}
}

// StreamServerInterceptor scopes each stream to its selectors
// (fromIncoming).
func StreamServerInterceptor(defaults keelv1.Scope) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &serverStream{ServerStream: ss, ctx: fromIncoming(ss.Context(), defaults)})
	}
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }
