package sdk

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// EnvLogLevel names the environment variable through which keeld tells a
// plugin its log level.
const EnvLogLevel = "KEEL_PLUGIN_LOG_LEVEL"

// EnvCPUProfile, when set in a plugin's environment, names a file the
// plugin writes a Go CPU profile to (with ".<kind>.<name>" appended) until
// it exits: for finding where a
// plugin spends its time.
const EnvCPUProfile = "KEEL_PLUGIN_CPUPROFILE"

// EnvHeapProfile, when set in a plugin's environment, names a file the
// plugin writes a Go heap profile to (with ".<kind>.<name>" appended) as it
// exits, after a collection: for finding what a plugin keeps.
const EnvHeapProfile = "KEEL_PLUGIN_HEAPPROFILE"

// rootLockWait is how long Configure waits for another process of the same
// plugin (an old instance that is still dying) to release the root.
const rootLockWait = 10 * time.Second

// Serve runs the plugin until keeld stops it. It owns stdout (the go-plugin
// handshake channel: never print to it), logs JSON to stderr, and closes the
// implementation on the way out.
func Serve(def Definition) {
	logger := hclog.New(&hclog.LoggerOptions{
		Level:      hclog.LevelFromString(os.Getenv(EnvLogLevel)),
		Output:     os.Stderr,
		JSONFormat: true,
	})
	base := &baseServer{def: def, logger: logger}
	go exitWithParent(logger)
	if path := os.Getenv(EnvCPUProfile); path != "" {
		stop := startCPUProfile(path+"."+def.Kind+"."+def.Name, logger)
		defer stop()
	}
	if path := os.Getenv(EnvHeapProfile); path != "" {
		defer writeHeapProfile(path+"."+def.Kind+"."+def.Name, logger)
	}

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: {
			def.Kind: &grpcPlugin{register: base.register},
		}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, wire.NewReclaimer(wire.PluginWork).ServerOptions()...)
			opts = append(opts, wire.ServerOptions()...)
			return grpc.NewServer(opts...)
		},
		Logger: logger,
	})
	base.close()
}

// exitWithParent ends the plugin when keeld goes away, should the parent
// death signal keeld asks the kernel for not have fired.
func exitWithParent(logger hclog.Logger) {
	parent := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != parent {
			logger.Warn("keeld is gone, exiting")
			os.Exit(1)
		}
	}
}

// baseServer serves the Base service and holds the implementation once
// Configure has built it.
type baseServer struct {
	pluginv1.UnimplementedBaseServer
	def    Definition
	logger hclog.Logger

	mu       sync.Mutex
	impl     io.Closer
	caps     []string
	rootLock *os.File
}

func (b *baseServer) register(s *grpc.Server) {
	pluginv1.RegisterBaseServer(s, b)
	b.def.Register(s, b.configured)
}

// configured returns the implementation, or FailedPrecondition before Configure.
func (b *baseServer) configured() (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.impl == nil {
		return nil, fmt.Errorf("%s plugin %q: not configured: %w", b.def.Kind, b.def.Name, errdefs.ErrFailedPrecondition)
	}
	return b.impl, nil
}

func (b *baseServer) Info(context.Context, *pluginv1.InfoRequest) (*pluginv1.InfoResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	caps := b.def.Capabilities
	if b.impl != nil {
		caps = b.caps
	}
	return &pluginv1.InfoResponse{
		Kind:         b.def.Kind,
		Name:         b.def.Name,
		Version:      b.def.Version,
		Capabilities: caps,
		Configured:   b.impl != nil,
	}, nil
}

func (b *baseServer) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.impl != nil {
		return nil, fmt.Errorf("already configured: %w", errdefs.ErrFailedPrecondition)
	}
	if req.Root == "" || req.State == "" {
		return nil, fmt.Errorf("configure needs a root and a state directory: %w", errdefs.ErrInvalidArgument)
	}
	for _, dir := range []string{req.Root, req.State} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	lock, err := lockRoot(ctx, req.Root)
	if err != nil {
		return nil, err
	}
	env := Env{
		Instance: req.Instance,
		Root:     req.Root,
		State:    req.State,
		Logger:   b.logger,
		Config:   req.Config,
	}
	impl, err := b.def.New(ctx, env)
	if err != nil {
		lock.Close()
		return nil, err
	}
	caps := b.def.CapabilitiesFor(impl)
	b.impl, b.caps, b.rootLock = impl, caps, lock
	b.logger.Info("configured", "root", req.Root, "state", req.State)
	return &pluginv1.ConfigureResponse{Capabilities: caps}, nil
}

func (b *baseServer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.impl != nil {
		if err := b.impl.Close(); err != nil {
			b.logger.Error("close failed", "error", err)
		}
		b.impl = nil
	}
	if b.rootLock != nil {
		b.rootLock.Close()
	}
}

// lockRoot takes an exclusive lock on the plugin's root so that two processes
// of one plugin never share a store, e.g. a new instance started while the
// old one is still dying.
func lockRoot(ctx context.Context, root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, ".keel-plugin.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(rootLockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("root %s is held by another plugin process: %w", root, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func startCPUProfile(path string, logger hclog.Logger) (stop func()) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		logger.Warn("cpu profile not started", "path", path, "error", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func writeHeapProfile(path string, logger hclog.Logger) {
	runtime.GC()
	f, err := os.Create(path)
	if err == nil {
		err = pprof.WriteHeapProfile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		logger.Warn("heap profile not written", "path", path, "error", err)
	}
}
