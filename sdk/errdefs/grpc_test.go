package errdefs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/test/bufconn"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// classServer answers every call of gRPC's test service with err, after
// reading what the call sends, and none of its handlers converts it: the
// interceptors alone carry the class. Each handler reports the error its
// own stream gave it on streamErr, when there is one.
type classServer struct {
	testgrpc.UnimplementedTestServiceServer
	err       error
	streamErr chan error
}

func (s *classServer) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return nil, s.err
}

func (s *classServer) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	return s.err
}

func (s *classServer) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return s.err
		} else if err != nil {
			s.streamErr <- err
			return err
		}
	}
}

func (s *classServer) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return s.err
}

// serve serves srv with the server options of every keel endpoint and dials
// it with the matching client options, over an in-memory connection.
func serve(t *testing.T, srv testgrpc.TestServiceServer) testgrpc.TestServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(wire.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(s, srv)
	go s.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn", append(wire.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
	})
	return testgrpc.NewTestServiceClient(conn)
}

// calls are the four shapes of an RPC, each returning the error the caller
// sees for a handler that fails.
var calls = []struct {
	name string
	call func(context.Context, testgrpc.TestServiceClient) error
}{
	{"unary", func(ctx context.Context, c testgrpc.TestServiceClient) error {
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return err
	}},
	{"server stream", func(ctx context.Context, c testgrpc.TestServiceClient) error {
		stream, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		if err != nil {
			return err
		}
		if _, err := stream.Recv(); err != nil {
			return fmt.Errorf("first message: %v", err)
		}
		_, err = stream.Recv()
		return err
	}},
	{"client stream", func(ctx context.Context, c testgrpc.TestServiceClient) error {
		stream, err := c.StreamingInputCall(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingInputCallRequest{}); err != nil {
			return err
		}
		_, err = stream.CloseAndRecv()
		return err
	}},
	{"bidi stream", func(ctx context.Context, c testgrpc.TestServiceClient) error {
		stream, err := c.FullDuplexCall(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}},
}

// TestClassesCrossTheWire: every class a handler returns, plainly wrapped
// with %w and never converted by hand, reaches the caller of every shape
// of call with its class and its message.
func TestClassesCrossTheWire(t *testing.T) {
	enospc := &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}
	classes := []struct {
		name string
		err  error
		is   func(error) bool
		msg  string // what the caller reads; the handler's own message when empty
	}{
		{"not found", errdefs.ErrNotFound, errdefs.IsNotFound, ""},
		{"already exists", errdefs.ErrAlreadyExists, errdefs.IsAlreadyExists, ""},
		{"invalid argument", errdefs.ErrInvalidArgument, errdefs.IsInvalidArgument, ""},
		{"failed precondition", errdefs.ErrFailedPrecondition, errdefs.IsFailedPrecondition, ""},
		// Conflict has no code of its own: it crosses as FailedPrecondition.
		{"conflict", errdefs.ErrConflict, errdefs.IsFailedPrecondition, `snapshot "k": conflict: failed precondition`},
		{"unavailable", errdefs.ErrUnavailable, errdefs.IsUnavailable, ""},
		{"resource exhausted", errdefs.ErrResourceExhausted, errdefs.IsResourceExhausted, ""},
		{"not implemented", errdefs.ErrNotImplemented, errdefs.IsNotImplemented, ""},
		{"permission denied", errdefs.ErrPermissionDenied, errdefs.IsPermissionDenied, ""},
		{"aborted", errdefs.ErrAborted, errdefs.IsAborted, ""},
		{"out of range", errdefs.ErrOutOfRange, errdefs.IsOutOfRange, ""},
		{"internal", errdefs.ErrInternal, errdefs.IsInternal, ""},
		{"data loss", errdefs.ErrDataLoss, errdefs.IsDataLoss, ""},
		{"unknown", errdefs.ErrUnknown, errdefs.IsUnknown, ""},
		{"canceled", context.Canceled, errdefs.IsCanceled, ""},
		{"deadline exceeded", context.DeadlineExceeded, errdefs.IsDeadlineExceeded, ""},
		{"no class", errors.New("boom"), errdefs.IsUnknown, `snapshot "k": boom: unknown`},
		{"full disk", enospc, errdefs.IsResourceExhausted, `snapshot "k": write /x: no space left on device: resource exhausted`},
	}
	for _, tc := range classes {
		err := fmt.Errorf("snapshot %q: %w", "k", tc.err)
		want := tc.msg
		if want == "" {
			want = err.Error()
		}
		for _, handler := range []struct {
			name string
			err  error
		}{
			{"plain", err},
			// A handler that still converts by hand: the second conversion
			// is harmless.
			{"converted", errdefs.ToGRPC(err)},
		} {
			c := serve(t, &classServer{err: handler.err})
			for _, call := range calls {
				t.Run(tc.name+"/"+handler.name+"/"+call.name, func(t *testing.T) {
					got := call.call(t.Context(), c)
					if !tc.is(got) {
						t.Errorf("caller got %v (%T), class lost", got, got)
					}
					if got == nil || got.Error() != want {
						t.Errorf("caller got message %q, want %q", got, want)
					}
				})
			}
		}
	}
}

// TestCallerContext: a caller's own cancellation and deadline are
// Canceled and DeadlineExceeded, whatever the shape of the call.
func TestCallerContext(t *testing.T) {
	c := serve(t, &classServer{err: errdefs.ErrInternal})
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel := context.WithTimeout(t.Context(), 0)
	defer cancel()
	for _, call := range calls {
		t.Run(call.name, func(t *testing.T) {
			if err := call.call(canceled, c); !errdefs.IsCanceled(err) {
				t.Errorf("canceled call: %v, want canceled", err)
			}
			if err := call.call(expired, c); !errdefs.IsDeadlineExceeded(err) {
				t.Errorf("expired call: %v, want deadline exceeded", err)
			}
		})
	}
}

// TestHandlerStreamErrorsHaveClass: a handler's own stream gives it errors
// of their class, as a caller's does: a caller that goes away mid-stream is
// Canceled to the handler.
func TestHandlerStreamErrorsHaveClass(t *testing.T) {
	srv := &classServer{streamErr: make(chan error, 1)}
	c := serve(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testgrpc.StreamingInputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-srv.streamErr; !errdefs.IsCanceled(err) {
		t.Fatalf("handler's Recv after the caller cancelled: %v (%T), want canceled", err, err)
	}
}
