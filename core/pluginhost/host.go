// Package pluginhost starts keel's plugins, checks them, hands out stable
// connections to them and keeps them running.
//
// Each configured plugin instance ("<kind>.<name>") is one process started
// with host.Launch: its sha256 checked on the open file, the handshake and
// protocol version negotiated, its kind checked through Info and its config
// handed over with Configure. A supervisor per instance then watches the
// process and pings it; a process that exits is started again with
// exponential backoff, and configured with the same config.
//
// A plugin is never restarted because it was slow. One whose ping goes
// unanswered for the health timeout is reported unresponsive (calls still
// reach it: it may yet answer). It is killed and restarted only when, for
// the whole hang timeout (2 minutes by default), it answered no ping while
// its process could run: a process stopped by a signal or a tracer, or in
// uninterruptible sleep (swapping, blocked on a disk), is held, not hung,
// and is waited for however long it takes.
//
// Conn returns a grpc.ClientConnInterface that stays valid across restarts:
// every call goes to the process that runs at the time. While the plugin is
// down a call fails at once with Unavailable naming it; a call in flight when
// the process dies fails the same way. Every error a plugin returns keeps its
// class (gRPC code) and gains the prefix "<kind>.<name>: ".
//
// # Starting on first use, stopping when idle
//
// A plugin may be lazy (Spec.Lazy: not launched by Start) and may have an
// idle stop (Spec.IdleStop). The connection counts the calls and streams
// in flight; once none has been for IdleStop, and the Busy hook (if any)
// says the plugin has no other work, the plugin is stopped gracefully: its
// process exits normally, which is no failure and no restart (Restarts and
// the logs say so), and its state is idle. A call that finds it idle starts
// it and waits; concurrent calls share one start. A start that fails fails
// those calls with Unavailable naming the plugin and why (checksum,
// handshake, exit...), the state is failed with that reason, and the next
// call tries again. Calls marked Passive neither start a plugin nor hold it;
// calls marked IfRunning reach it only while it runs, and do not count as
// a use.
package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Spec is one plugin instance to run.
type Spec struct {
	Kind string
	Name string
	// Path of the executable; SHA256, when set, is the hex digest it must have.
	Path   string
	SHA256 string
	// Env is added to the plugin's environment, over keeld's own.
	Env map[string]string
	// Config is the instance's config block as JSON (nil for none).
	Config json.RawMessage
	// Root and State are the directories handed to the plugin at Configure.
	Root  string
	State string
	// Lazy: Start does not launch the plugin; its first call does.
	Lazy bool
	// IdleStop, when positive, stops the plugin gracefully once no call
	// has been in flight for that long (and Busy, if set, says it has
	// nothing to do); the next call starts it again. 0: never.
	IdleStop time.Duration
	// Busy, when set, is asked before an idle stop whether the plugin
	// still has work though no call is in flight (a runtime's tasks):
	// true, or an error, keeps it running for another IdleStop. Its
	// calls through conn neither start the plugin nor count as in flight.
	Busy func(ctx context.Context, conn grpc.ClientConnInterface) (bool, error)
}

// ID is the instance's name in logs and errors: "<kind>.<name>".
func (s Spec) ID() string { return s.Kind + "." + s.Name }

// StartError is an instance's start refused because of one of its
// settings: Setting is "path", "sha256" or "kind" (see host.LaunchError),
// or "config" when the plugin's Configure refused its config block as
// InvalidArgument, with Key the dotted path of the key it named
// (sdk.ConfigKeyError), if any. keeld points it at the config file.
type StartError struct {
	Kind, Name   string
	Setting, Key string
	Err          error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// PluginSetting returns Setting and Key (config.SettingError).
func (e *StartError) PluginSetting() (setting, key string) { return e.Setting, e.Key }

// States of a plugin instance.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	// StateUnresponsive: the process runs but does not answer pings; calls
	// still go to it.
	StateUnresponsive = "unresponsive"
	StateRestarting   = "restarting" // down, a restart is pending
	// StateFailed: the last start failed: retried with backoff after a
	// crash, by the next call after an idle stop. Status.LastError says
	// why.
	StateFailed  = "failed"
	StateStopped = "stopped" // by Stop: keeld is stopping
	// StateIdle: stopped gracefully for idleness (Spec.IdleStop), or not
	// started yet (Spec.Lazy); the next call starts it.
	StateIdle = "idle"
)

// Status is what the host knows of one plugin instance.
type Status struct {
	Kind, Name, Path string
	Version          string
	Pid              int // 0 while no process runs
	State            string
	// Restarts counts the restart attempts since Start; starts after an
	// idle stop are no restarts.
	Restarts     int
	Capabilities []string
	LastError    string
}

// Option changes how a Host runs its plugins.
type Option func(*options)

type options struct {
	backoffMin, backoffMax time.Duration
	stableAfter            time.Duration
	healthInterval         time.Duration
	healthTimeout          time.Duration
	hangTimeout            time.Duration
	startTimeout           time.Duration
	socketDir              string
	events                 func(Event)                               // WithEvents
	dial                   func(kind, name string) []grpc.DialOption // WithDialOptions
}

// WithBackoff sets the delay before the first restart and its cap; the delay
// doubles after each restart and is reset once a process ran for a minute.
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithHealthCheck sets how often a plugin is pinged and how long a ping may
// go unanswered before the plugin is reported unresponsive (defaults: 10s,
// 5s). A slow answer restarts nothing; see WithHangTimeout.
func WithHealthCheck(interval, timeout time.Duration) Option {
	return func(o *options) { o.healthInterval, o.healthTimeout = interval, timeout }
}

// WithHangTimeout sets how long a plugin whose process can run may answer
// no ping before it is killed and restarted (default 2 minutes). A process
// stopped or in uninterruptible sleep is never killed for not answering.
func WithHangTimeout(d time.Duration) Option {
	return func(o *options) { o.hangTimeout = d }
}

// WithStartTimeout bounds a plugin's handshake, Info and Configure.
func WithStartTimeout(d time.Duration) Option {
	return func(o *options) { o.startTimeout = d }
}

// WithSocketDir puts the plugins' sockets in dir (which must exist) rather
// than in the system's temp dir, so a killed host leaves nothing outside
// its own dirs.
func WithSocketDir(dir string) Option {
	return func(o *options) { o.socketDir = dir }
}

// Host runs a set of plugin instances.
type Host struct {
	base   hclog.Logger // parent of the plugins' own loggers
	logger hclog.Logger
	opts   options

	mu        sync.Mutex
	instances map[string]*instance
	order     []*instance
	started   bool
}

// New returns a Host; Start launches its plugins.
func New(logger hclog.Logger, opts ...Option) *Host {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	o := options{
		backoffMin:     100 * time.Millisecond,
		backoffMax:     30 * time.Second,
		stableAfter:    time.Minute,
		healthInterval: 10 * time.Second,
		healthTimeout:  5 * time.Second,
		hangTimeout:    2 * time.Minute,
		startTimeout:   30 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return &Host{
		base:      logger,
		logger:    logger.Named("pluginhost"),
		opts:      o,
		instances: map[string]*instance{},
	}
}

// Start launches every spec in parallel and configures it. If any fails,
// every plugin is stopped and the error names each instance that failed and
// why. Start may be called once.
func (h *Host) Start(ctx context.Context, specs []Spec) error {
	h.mu.Lock()
	if h.started {
		h.mu.Unlock()
		return fmt.Errorf("plugin host already started: %w", errdefs.ErrFailedPrecondition)
	}
	h.started = true
	var insts []*instance
	for _, s := range specs {
		if _, dup := h.instances[s.ID()]; dup {
			h.mu.Unlock()
			return fmt.Errorf("plugin %s is configured twice: %w", s.ID(), errdefs.ErrInvalidArgument)
		}
		in := newInstance(h, s)
		h.instances[s.ID()] = in
		insts = append(insts, in)
	}
	h.order = insts
	h.mu.Unlock()

	var g errgroup.Group
	errs := make([]error, len(insts))
	for i, in := range insts {
		g.Go(func() error {
			errs[i] = in.start(ctx)
			return nil
		})
	}
	_ = g.Wait()
	if err := errors.Join(errs...); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = h.Stop(stopCtx)
		return err
	}
	return nil
}

// Conn returns the connection to the plugin instance kind.name, stable across
// its restarts; wrap it in the kind's client (snapshot.NewClient...). It
// fails with NotFound when no such plugin is configured.
func (h *Host) Conn(kind, name string) (grpc.ClientConnInterface, error) {
	h.mu.Lock()
	in := h.instances[kind+"."+name]
	h.mu.Unlock()
	if in == nil {
		return nil, fmt.Errorf("plugin %s.%s is not configured: %w", kind, name, errdefs.ErrNotFound)
	}
	return &conn{in: in}, nil
}

// Plugins returns the status of every instance, ordered by kind and name.
func (h *Host) Plugins() []Status {
	h.mu.Lock()
	insts := append([]*instance(nil), h.order...)
	h.mu.Unlock()
	out := make([]Status, 0, len(insts))
	for _, in := range insts {
		out = append(out, in.status())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Stop stops every plugin: gracefully, then by SIGKILL. It returns when all
// processes are gone or ctx ends.
func (h *Host) Stop(ctx context.Context) error {
	h.mu.Lock()
	insts := append([]*instance(nil), h.order...)
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.stop()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping plugins: %w", ctx.Err())
	}
}
