// Package cri serves Kubernetes' Container Runtime Interface (CRI v1,
// k8s.io/cri-api) for keel: the RuntimeService and the ImageService on a
// unix socket of their own, for a kubelet's --container-runtime-endpoint.
//
// The server is a client of keeld's public API (package client) and keeps
// no state of its own: images are keel images in one keel namespace
// (k8s.io by default, as containerd's CRI), the pod CIDR the kubelet sets
// is a label of that namespace, and whatever a restarted server needs it
// reads from keeld again. keeld starts it (cmd/keel-cri) when its config
// enables the cri block, and restarts it when it dies.
//
// Served so far: Version, Status, UpdateRuntimeConfig, RuntimeConfig,
// the pod sandbox calls (sandbox.go), ExecSync and the streaming calls
// (Exec, Attach, PortForward, through Kubernetes' streaming server:
// streaming.go), the container calls (container.go), the stats (stats.go)
// and GetContainerEvents (events.go) of the RuntimeService, and the whole
// ImageService. What is left (the CRI metrics calls, user namespaces)
// answers Unimplemented, naming the call.
package cri

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Config is how the server runs.
type Config struct {
	// Namespace is the keel namespace of the CRI's images, pods and
	// containers; the client's namespace.
	Namespace string
	// SandboxImage is the pods' pause image.
	SandboxImage string
	// PausePath is keel-pause, which the server packages as SandboxImage
	// (EnsurePauseImage); empty: SandboxImage is pulled when missing.
	PausePath string
}

// Server is the CRI server over one keeld client.
type Server struct {
	c      *client.Client
	cfg    Config
	logger hclog.Logger
	grpc   *grpc.Server
	images *imageService
	// stream and streamHTTP are the streaming server (streaming.go), nil
	// until StartStreaming.
	stream     streaming.Server
	streamHTTP *http.Server
	// rates keeps the last cpu samples for usage_nano_cores (stats.go).
	rates cpuRates
}

// New returns a server that serves the CRI from keeld through c, whose
// namespace must be cfg.Namespace.
func New(c *client.Client, cfg Config, logger hclog.Logger) *Server {
	s := &Server{c: c, cfg: cfg, logger: logger}
	s.images = &imageService{c: c, logger: logger.Named("images")}
	if named, err := NormalizeRef(cfg.SandboxImage); err == nil {
		s.images.pinned = named.String()
	}
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)
	runtimeapi.RegisterRuntimeServiceServer(s.grpc, &runtimeService{s: s})
	runtimeapi.RegisterImageServiceServer(s.grpc, s.images)
	return s
}

// Serve serves the CRI on l until Stop.
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(l) }

// Stop ends the server gracefully within ctx, then at once.
func (s *Server) Stop(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
	}
	if s.streamHTTP != nil {
		s.streamHTTP.Close()
	}
}

// unaryInterceptor turns keel's error classes into gRPC codes, logs
// failures once (at debug: the kubelet retries and reports them itself),
// and says which calls are not served yet.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		err = s.callError(info.FullMethod, err)
	}
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if err != nil {
		err = s.callError(info.FullMethod, err)
	}
	return err
}

func (s *Server) callError(method string, err error) error {
	name := method[strings.LastIndexByte(method, '/')+1:]
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented && strings.HasPrefix(st.Message(), "method ") {
		// The generated stub: a call of a later slice.
		return status.Errorf(codes.Unimplemented, "keel-cri: %s is not served yet (keel-cri serves Version, Status, UpdateRuntimeConfig, RuntimeConfig, the pod sandbox, container, stats and metrics calls, GetContainerEvents, ExecSync, Exec, Attach, PortForward and the ImageService)", name)
	}
	s.logger.Debug("call failed", "method", name, "error", err)
	return errdefs.ToGRPC(fmt.Errorf("%s: %w", name, err))
}
