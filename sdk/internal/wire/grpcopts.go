package wire

import (
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// MaxMessageSize bounds one gRPC message on keel's connections (sdk.MaxMessageSize).
const MaxMessageSize = 256 << 20

// Flow control and buffers sized for ChunkSize messages: with gRPC's
// defaults a 1 MiB chunk waits on window updates and passes through many
// small reads and writes.
const (
	streamWindow = 8 << 20
	connWindow   = 16 << 20
	ioBuffer     = 256 << 10
)

// ServerOptions are the gRPC server options of every keel endpoint: keeld's
// API and each plugin (sdk/host re-exports them for keeld). Their
// interceptor converts each handler's error with errdefs.ToGRPC; it is added
// to the chain where these options stand, so an endpoint that wants its own
// interceptors to see the status a call ends with (its code) puts them
// before these options.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(errdefs.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer),
		grpc.WriteBufferSize(ioBuffer),
	}
}

// DialOptions are the matching client options. Their interceptor converts
// each call's errors with errdefs.FromGRPC, so a caller gets errors of their
// class back.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(errdefs.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(errdefs.StreamClientInterceptor()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithWriteBufferSize(ioBuffer),
	}
}
