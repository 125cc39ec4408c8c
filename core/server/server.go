// Package server is keeld: it opens the metadata, starts the configured
// plugins, and serves the keel.v1 API on its unix socket.
//
// The API is api/keel/v1 (Version, Plugins, Namespaces) plus the plugin
// services Content and Snapshotter of the plugin protocol, served over keeld's
// namespaced views of the plugins: the namespace and the snapshotter of a call
// travel in gRPC metadata (keel-namespace, keel-snapshotter), read by one
// interceptor (core/scope).
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/hashicorp/go-hclog"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/check"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/metrics"
	"github.com/keel-runtime/keel/core/network"
	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/core/unixsock"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// Server is a running keeld.
type Server struct {
	cfg    *config.Config
	logger hclog.Logger

	db      *metadata.DB
	plugins *pluginhost.Host
	content content.Store
	// snapshotters are the namespaced views of the snapshotter plugins, by name.
	snapshotters map[string]snapshot.Snapshotter
	// resolvers are the resolver plugins, by name. Resolving touches no
	// namespaced state, so they are served as they are.
	resolvers map[string]resolver.Resolver
	// runtimes are the runtime plugins, by name; events republishes their
	// task events (tasks.go).
	runtimes map[string]runtime.Runtime
	// net is the CNI networks and their attachments (network.go).
	net        *network.Manager
	events     *events.Exchange
	stopEvents context.CancelFunc
	eventsWG   sync.WaitGroup

	// keelMetrics are keeld's own figures; stopMetrics ends the task
	// collector's event subscription (metrics.go).
	keelMetrics *metrics.Metrics
	stopMetrics context.CancelFunc

	gc       *gc.Scheduler
	grpc     *grpc.Server
	health   *health.Server
	listener net.Listener
	metrics  *http.Server
	// cri runs keel-cri when the config enables it (cri.go).
	cri *criSupervisor
	// ready is closed once Serve listens (Ready).
	ready  chan struct{}
	reload reloadState
}

// New opens keeld's metadata and starts its plugins. Serve then serves the API.
func New(ctx context.Context, cfg *config.Config, logger hclog.Logger) (_ *Server, err error) {
	s := newServer(cfg, logger)
	defer func() {
		if err != nil {
			s.Stop(context.Background())
		}
	}()
	if err := s.openDB(); err != nil {
		return nil, err
	}
	// What a killed keeld left (mounts, plugin sockets, temp dirs) goes
	// before anything of this one is made; the metadata lock, held now,
	// says that no other keeld uses them.
	removed, err := check.Sweep(cfg.Root, cfg.State)
	for _, l := range removed {
		logger.Info("removed what a killed keeld left", "kind", l.Kind, "path", l.Path)
	}
	if err != nil {
		logger.Error("sweeping what a killed keeld left", "error", err)
	}
	if err := s.startPlugins(ctx); err != nil {
		return nil, err
	}
	if err := s.startRuntimes(); err != nil {
		return nil, err
	}
	s.startNetwork()
	s.startGC()
	s.grpc = s.newGRPCServer()
	return s, nil
}

func newServer(cfg *config.Config, logger hclog.Logger) *Server {
	return &Server{
		cfg: cfg, logger: logger, ready: make(chan struct{}), snapshotters: map[string]snapshot.Snapshotter{}, resolvers: map[string]resolver.Resolver{},
		keelMetrics: metrics.New(), events: events.NewExchange(cfg.EventsWindow()),
	}
}

// openDB makes keeld's dirs and opens (and locks) its metadata.
func (s *Server) openDB() (err error) {
	for _, dir := range []string{s.cfg.Root, s.cfg.State} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return err
		}
	}
	s.db, err = metadata.Open(filepath.Join(s.cfg.Root, "meta.db"), metadata.Options{})
	return err
}

// startPlugins starts the plugins and makes keeld's namespaced views over
// them.
func (s *Server) startPlugins(ctx context.Context) error {
	cfg := s.cfg
	sockets := check.SocketDir(cfg.State)
	if err := os.MkdirAll(sockets, 0o700); err != nil {
		return err
	}
	s.plugins = pluginhost.New(s.logger, pluginhost.WithSocketDir(sockets),
		pluginhost.WithDialOptions(s.keelMetrics.PluginInterceptors), pluginhost.WithEvents(s.pluginEvents))
	var specs []pluginhost.Spec
	for _, p := range cfg.Plugins {
		spec := pluginhost.Spec{
			Kind: p.Kind, Name: p.Name, Path: p.Path, SHA256: p.SHA256, Env: p.Env, Config: p.Config,
			Root: p.Root(cfg), State: p.State(cfg),
			Lazy: p.LazyStart, IdleStop: time.Duration(p.IdleStop),
		}
		if p.Kind == sdk.KindRuntime {
			spec.Busy = runtimeHasTasks
		}
		specs = append(specs, spec)
	}
	if err := s.plugins.Start(ctx, specs); err != nil {
		return locatePluginErrors(cfg, err)
	}
	for _, p := range cfg.PluginsOf(sdk.KindSnapshotter) {
		conn, err := s.plugins.Conn(p.Kind, p.Name)
		if err != nil {
			return err
		}
		s.snapshotters[p.Name] = publishedSnapshotter{metadata.NewSnapshotter(s.db, p.Name, snapshot.NewClient(conn)), p.Name, s}
	}
	for _, p := range cfg.PluginsOf(sdk.KindResolver) {
		conn, err := s.plugins.Conn(p.Kind, p.Name)
		if err != nil {
			return err
		}
		s.resolvers[p.Name] = resolver.NewClient(conn)
	}
	if cs := cfg.PluginsOf(sdk.KindContent); len(cs) == 1 {
		conn, err := s.plugins.Conn(cs[0].Kind, cs[0].Name)
		if err != nil {
			return err
		}
		// Bytes keeld takes in (ingest, fetch, import) go straight into
		// the store's ingest file when the plugin names one.
		s.content = metadata.NewContentStore(s.db, content.NewClient(conn, content.WithIngestFiles(cs[0].Root(cfg))))
	}
	return nil
}

func (s *Server) newGRPCServer() *grpc.Server {
	metrics := newGRPCMetrics()
	srv := grpc.NewServer(s.serverOptions(metrics)...)
	keelv1.RegisterVersionServer(srv, versionService{})
	keelv1.RegisterPluginsServer(srv, pluginsService{host: s.plugins})
	keelv1.RegisterSystemServer(srv, systemService{s: s})
	keelv1.RegisterNamespacesServer(srv, namespacesService{store: s.db.Namespaces(), events: s.events})
	s.registerEvents(srv)
	s.registerImages(srv)
	s.registerTasks(srv)
	s.registerNetworks(srv)
	if s.content != nil {
		content.RegisterServer(srv, func(context.Context) (content.Store, error) {
			return publishedContent{s.content, s}, nil
		})
	}
	snapshot.RegisterServer(srv, s.snapshotter)
	resolver.RegisterServer(srv, s.apiResolver)
	keelv1.RegisterTransferServer(srv, transferService{s: s})
	keelv1.RegisterCheckServer(srv, checkService{s: s})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(srv, s.health)
	metrics.InitializeMetrics(srv)
	s.registerMetrics(metrics)
	return srv
}

// serverOptions are the API's gRPC options. keeld's interceptors stand
// before host.ServerOptions, whose interceptor turns a handler's error into
// its status: so the metrics and the log see the code the call ends with.
func (s *Server) serverOptions(metrics *grpcprom.ServerMetrics) []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor(), scope.UnaryServerInterceptor(s.defaultScope()), s.logUnary),
		grpc.ChainStreamInterceptor(metrics.StreamServerInterceptor(), scope.StreamServerInterceptor(s.defaultScope()), s.logStream),
	}, append(append(host.ServerOptions(), host.ReclaimOptions(apiWork)...), grpc.MaxRecvMsgSize(maxRequestSize))...)
}

// apiWork says whether an API call is work after which keeld gives its
// free memory back: keel's calls, except those that last as long as their
// caller (the event streams, a wait for an exit).
func apiWork(method string) bool {
	switch method {
	case keelv1.Tasks_Events_FullMethodName, keelv1.Tasks_Wait_FullMethodName, keelv1.Events_Subscribe_FullMethodName:
		return false
	}
	return strings.HasPrefix(method, "/keel.v1.")
}

// defaultScope is what a call that names no snapshotter or resolver is
// scoped to: the configured default_snapshotter, and the resolver when
// only one is configured.
func (s *Server) defaultScope() keelv1.Scope {
	def := keelv1.Scope{Snapshotter: s.cfg.DefaultSnapshotter}
	if len(s.resolvers) == 1 {
		for name := range s.resolvers {
			def.Resolver = name
		}
	}
	return def
}

// snapshotter is the snapshotter plugin of the call's scope.
func (s *Server) snapshotter(ctx context.Context) (snapshot.Snapshotter, error) {
	name := scope.Snapshotter(ctx)
	sn, ok := s.snapshotters[name]
	if !ok {
		return nil, fmt.Errorf("snapshotter %q is not configured: %w", name, errdefs.ErrNotFound)
	}
	return sn, nil
}

// resolver is the resolver plugin of the call's scope.
func (s *Server) resolver(ctx context.Context) (resolver.Resolver, error) {
	name := scope.Resolver(ctx)
	if name == "" {
		if len(s.resolvers) == 0 {
			return nil, fmt.Errorf("no resolver plugin is configured: %w", errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("%d resolver plugins are configured: name one (%s metadata): %w", len(s.resolvers), keelv1.MetadataResolver, errdefs.ErrInvalidArgument)
	}
	r, ok := s.resolvers[name]
	if !ok {
		return nil, fmt.Errorf("resolver %q is not configured: %w", name, errdefs.ErrNotFound)
	}
	if err := s.resolverTakesCredentials(ctx, name); err != nil {
		return nil, err
	}
	return r, nil
}

// apiResolver is the resolver keeld's API serves: the named plugin, minus
// FetchToFile, whose file only keeld chooses (the content store's ingest
// file), never an API caller.
func (s *Server) apiResolver(ctx context.Context) (resolver.Resolver, error) {
	r, err := s.resolver(ctx)
	if err != nil {
		return nil, err
	}
	return streamOnlyResolver{r}, nil
}

type streamOnlyResolver struct{ resolver.Resolver }

func (r streamOnlyResolver) ResolveExplain(ctx context.Context, ref string) (string, ocispec.Descriptor, []resolver.Attempt, error) {
	e, ok := r.Resolver.(resolver.Explainer)
	if !ok {
		name, desc, err := r.Resolve(ctx, ref)
		return name, desc, nil, err
	}
	return e.ResolveExplain(ctx, ref)
}

// Serve listens on the API socket (and the metrics address) and serves until
// Stop.
func (s *Server) Serve() error {
	l, err := unixsock.Listen(s.cfg.GRPC.Address, s.cfg.GRPC.UID, s.cfg.GRPC.GID, "keeld")
	if err != nil {
		return err
	}
	s.listener = l
	if s.metrics != nil {
		ml, err := net.Listen("tcp", s.cfg.Metrics.Address)
		if err != nil {
			l.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		go func() {
			if err := s.metrics.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.logger.Error("metrics server failed", "error", err)
			}
		}()
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.logger.Info("serving", "address", s.cfg.GRPC.Address, "metrics", s.cfg.Metrics.Address)
	close(s.ready)
	s.startCRI()
	return s.grpc.Serve(l)
}

// Stop ends the API gracefully (within ctx), then the plugins and the
// metadata. It is safe after a partial New.
func (s *Server) Stop(ctx context.Context) {
	// keel-cri first: it is a client of the API.
	s.cri.stop(ctx)
	if s.health != nil {
		s.health.Shutdown()
	}
	if s.grpc != nil {
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
		}
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
	if s.stopMetrics != nil {
		s.stopMetrics()
	}
	if s.gc != nil {
		s.gc.Stop()
	}
	s.stopRuntimes()
	if s.db != nil {
		// Snapshots removed from the records go from their plugins
		// before the plugins stop; what a stop cut short is an orphan
		// for the next collection.
		if err := s.db.SettleSnapshotRemovals(ctx); err != nil {
			s.logger.Warn("removing snapshots from their plugins", "error", err)
		}
	}
	if s.plugins != nil {
		if err := s.plugins.Stop(ctx); err != nil {
			s.logger.Warn("stopping plugins", "error", err)
		}
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.listener != nil {
		os.Remove(s.cfg.GRPC.Address)
	}
	check.RemoveOwnDirs(s.cfg.State)
}

// locatePluginErrors points each plugin's start refusal (joined in err) at
// the place in the config file it is about.
func locatePluginErrors(cfg *config.Config, err error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for i, e := range errs {
		var se *pluginhost.StartError
		if errors.As(e, &se) {
			errs[i] = cfg.PluginError(se.Kind, se.Name, e)
		}
	}
	return errors.Join(errs...)
}

func (s *Server) registerMetrics(g *grpcprom.ServerMetrics) {
	if s.cfg.Metrics.Address == "" {
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(s.metricsCollectors(g)...)
	mux := http.NewServeMux()
	mux.Handle("/v1/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}
