package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// A call's selectors (namespace, lease, snapshotter, resolver) travel in
// its context as one keelv1.Scope (keelv1.WithScope); the client's
// interceptor (withScope) writes them into the call's metadata, each key
// once. Options and context helpers only change the Scope.

// scoped returns ctx whose Scope takes the selectors sel names.
func scoped(ctx context.Context, sel keelv1.Scope) context.Context {
	return keelv1.WithScope(ctx, func(s *keelv1.Scope) { *s = sel.Or(*s) })
}

// WithNamespaceContext scopes the calls made with the returned context to
// namespace ns, whatever the client's own namespace.
func WithNamespaceContext(ctx context.Context, ns string) context.Context {
	return keelv1.WithScope(ctx, func(s *keelv1.Scope) { s.Namespace = ns })
}

// NamespaceFromContext returns the namespace WithNamespaceContext set.
func NamespaceFromContext(ctx context.Context) (string, bool) {
	ns := keelv1.ScopeFromContext(ctx).Namespace
	return ns, ns != ""
}

// callScope is the Scope of a call made with ctx: the selectors its
// context names, else those its outgoing metadata already holds.
func callScope(ctx context.Context) keelv1.Scope {
	md, _ := metadata.FromOutgoingContext(ctx)
	return keelv1.ScopeFromContext(ctx).Or(keelv1.ScopeFromMetadata(md))
}

// withScope returns ctx whose outgoing metadata holds the call's Scope,
// in the client's namespace when the call names none.
func (c *Client) withScope(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	callScope(ctx).Or(keelv1.Scope{Namespace: c.namespace}).SetMetadata(md)
	return metadata.NewOutgoingContext(ctx, md)
}

func (c *Client) unaryScope(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(c.withScope(ctx), method, req, reply, cc, opts...)
}

func (c *Client) streamScope(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(c.withScope(ctx), desc, cc, method, opts...)
}

// scopedConn scopes every call made through it to the selectors of scope,
// over those of the call's context.
type scopedConn struct {
	cc    grpc.ClientConnInterface
	scope keelv1.Scope
}

var _ grpc.ClientConnInterface = scopedConn{}

func (s scopedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return s.cc.Invoke(scoped(ctx, s.scope), method, args, reply, opts...)
}

func (s scopedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return s.cc.NewStream(scoped(ctx, s.scope), desc, method, opts...)
}
