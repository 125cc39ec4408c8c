package server

import (
	"context"
	"fmt"
	"maps"
	"net"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/test/bufconn"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
)

// failing answers every call with a NotFound error, as keeld's handlers
// return them: plain, of their class.
type failing struct {
	testgrpc.UnimplementedTestServiceServer
}

func (failing) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return nil, fmt.Errorf("image %q: %w", "x", errdefs.ErrNotFound)
}

func (failing) StreamingOutputCall(*testgrpc.StreamingOutputCallRequest, testgrpc.TestService_StreamingOutputCallServer) error {
	return fmt.Errorf("image %q: %w", "x", errdefs.ErrNotFound)
}

// TestAPIErrorsKeepTheirCode: over keeld's API options a handler's plain
// error reaches the caller of its class, and keeld's metrics count the call
// under the code it ended with (its interceptors see the converted error).
func TestAPIErrorsKeepTheirCode(t *testing.T) {
	s := newServer(&config.Config{}, hclog.NewNullLogger())
	metrics := newGRPCMetrics()
	srv := grpc.NewServer(s.serverOptions(metrics)...)
	testgrpc.RegisterTestServiceServer(srv, failing{})
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///keeld", append(host.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	c := testgrpc.NewTestServiceClient(conn)

	_, unary := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
	stream, err := c.StreamingOutputCall(t.Context(), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, streamed := stream.Recv()
	for method, err := range map[string]error{
		"/grpc.testing.TestService/UnaryCall":           unary,
		"/grpc.testing.TestService/StreamingOutputCall": streamed,
	} {
		if !errdefs.IsNotFound(err) || err.Error() != `image "x": not found` {
			t.Errorf("%s: caller got %v, want not found", method, err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			counted["/"+labels["grpc_service"]+"/"+labels["grpc_method"]+" "+labels["grpc_code"]] += m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"/grpc.testing.TestService/UnaryCall NotFound":           1,
		"/grpc.testing.TestService/StreamingOutputCall NotFound": 1,
	}
	if !maps.Equal(counted, want) {
		t.Errorf("calls counted %v, want %v", counted, want)
	}
}
