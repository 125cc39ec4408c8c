package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

type namespaceKey struct{}

// WithNamespaceContext scopes the calls made with the returned context to
// namespace ns, whatever the client's own namespace.
func WithNamespaceContext(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, namespaceKey{}, ns)
}

// NamespaceFromContext returns the namespace WithNamespaceContext set.
func NamespaceFromContext(ctx context.Context) (string, bool) {
	ns, ok := ctx.Value(namespaceKey{}).(string)
	return ns, ok && ns != ""
}

// withNamespace puts the call's namespace in its outgoing metadata: the
// context's, else one already in the metadata, else the client's.
func (c *Client) withNamespace(ctx context.Context) context.Context {
	if ns, ok := NamespaceFromContext(ctx); ok {
		return setMetadata(ctx, keelv1.MetadataNamespace, ns)
	}
	if md, ok := metadata.FromOutgoingContext(ctx); ok && len(md.Get(keelv1.MetadataNamespace)) > 0 {
		return ctx
	}
	return setMetadata(ctx, keelv1.MetadataNamespace, c.namespace)
}

func (c *Client) unaryNamespace(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(c.withNamespace(ctx), method, req, reply, cc, opts...)
}

func (c *Client) streamNamespace(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(c.withNamespace(ctx), desc, cc, method, opts...)
}

// setMetadata sets key to value in ctx's outgoing metadata, replacing any
// value it had.
func setMetadata(ctx context.Context, key, value string) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(key, value)
	return metadata.NewOutgoingContext(ctx, md)
}

// metadataConn adds one metadata key to every call made through it.
type metadataConn struct {
	cc         grpc.ClientConnInterface
	key, value string
}

var _ grpc.ClientConnInterface = metadataConn{}

func (m metadataConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return m.cc.Invoke(setMetadata(ctx, m.key, m.value), method, args, reply, opts...)
}

func (m metadataConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return m.cc.NewStream(setMetadata(ctx, m.key, m.value), desc, method, opts...)
}
