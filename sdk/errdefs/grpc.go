package errdefs

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// The interceptors convert errors at the gRPC edge, once, so that no
// handler and no caller does it by hand (and a new RPC cannot forget to):
// a handler returns a plain Go error of its class, a caller gets one back.
// Every keel endpoint installs them through its gRPC options; a test that
// serves or dials keel's services itself installs them too.

// UnaryServerInterceptor converts the error a unary handler returns with
// ToGRPC.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, ToGRPC(err)
	}
}

// StreamServerInterceptor converts the error a stream handler returns with
// ToGRPC. The handler's own stream hands it errors of their class too
// (SendMsg, RecvMsg: the caller went away, Canceled), as a client's does.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return ToGRPC(handler(srv, serverStream{ss}))
	}
}

// serverStream is a server stream whose errors are converted.
type serverStream struct{ grpc.ServerStream }

func (s serverStream) SendMsg(m any) error { return FromGRPC(s.ServerStream.SendMsg(m)) }
func (s serverStream) RecvMsg(m any) error { return FromGRPC(s.ServerStream.RecvMsg(m)) }

// UnaryClientInterceptor converts the error of a unary call with FromGRPC.
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return FromGRPC(invoker(ctx, method, req, reply, cc, opts...))
	}
}

// StreamClientInterceptor converts the errors of a stream with FromGRPC:
// opening it, and its Header, SendMsg, RecvMsg and CloseSend. io.EOF stays
// io.EOF.
func StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, FromGRPC(err)
		}
		return clientStream{s}, nil
	}
}

// clientStream is a client stream whose errors are converted.
type clientStream struct{ grpc.ClientStream }

func (s clientStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	return md, FromGRPC(err)
}

func (s clientStream) SendMsg(m any) error { return FromGRPC(s.ClientStream.SendMsg(m)) }
func (s clientStream) RecvMsg(m any) error { return FromGRPC(s.ClientStream.RecvMsg(m)) }
func (s clientStream) CloseSend() error    { return FromGRPC(s.ClientStream.CloseSend()) }
