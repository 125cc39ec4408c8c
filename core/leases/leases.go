// Package leases carries the lease of a call in its context. Clients send
// it in gRPC metadata under keelv1.MetadataLease ("keel-lease"); keeld's
// interceptors read it into the context, and the namespaced content and
// snapshot stores attach what a call creates to it.
package leases

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

type leaseKey struct{}

// WithLease returns ctx carrying lease id.
func WithLease(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, leaseKey{}, id)
}

// FromContext returns the lease ctx carries.
func FromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(leaseKey{}).(string)
	return id, ok && id != ""
}

// FromIncoming returns ctx with the lease of the incoming gRPC metadata,
// when it names one.
func FromIncoming(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(keelv1.MetadataLease); len(v) > 0 && v[0] != "" {
		return WithLease(ctx, v[0])
	}
	return ctx
}

// ToOutgoing adds the lease ctx carries to its outgoing gRPC metadata.
func ToOutgoing(ctx context.Context) context.Context {
	if id, ok := FromContext(ctx); ok {
		return metadata.AppendToOutgoingContext(ctx, keelv1.MetadataLease, id)
	}
	return ctx
}

// UnaryServerInterceptor puts the call's lease in its context.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(FromIncoming(ctx), req)
	}
}

// StreamServerInterceptor puts the stream's lease in its context.
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
