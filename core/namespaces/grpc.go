package namespaces

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// FromIncoming returns ctx with the namespace and snapshotter read from the
// incoming gRPC metadata. The namespace defaults to keelv1.DefaultNamespace;
// it is not validated here, NamespaceRequired does that where it is used.
func FromIncoming(ctx context.Context) context.Context {
	ns := keelv1.DefaultNamespace
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(keelv1.MetadataNamespace); len(v) > 0 && v[0] != "" {
		ns = v[0]
	}
	ctx = WithNamespace(ctx, ns)
	if v := md.Get(keelv1.MetadataSnapshotter); len(v) > 0 && v[0] != "" {
		ctx = WithSnapshotter(ctx, v[0])
	}
	return ctx
}

// ToOutgoing returns ctx with the namespace and snapshotter it carries added
// to the outgoing gRPC metadata, for clients.
func ToOutgoing(ctx context.Context) context.Context {
	if ns, ok := Namespace(ctx); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, keelv1.MetadataNamespace, ns)
	}
	if sn, ok := Snapshotter(ctx); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, keelv1.MetadataSnapshotter, sn)
	}
	return ctx
}

// UnaryServerInterceptor puts the call's namespace and snapshotter in its
// context.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(FromIncoming(ctx), req)
	}
}

// StreamServerInterceptor puts the stream's namespace and snapshotter in its
// context.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &serverStream{ServerStream: ss, ctx: FromIncoming(ss.Context())})
	}
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }
