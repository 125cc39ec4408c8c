package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// LaunchConfig says how to start one plugin process.
type LaunchConfig struct {
	// Path of the plugin executable.
	Path string
	// SHA256, when set, is the hex digest the executable must have. It is
	// taken of the very file that is then executed.
	SHA256 string
	// Env is added to the environment the plugin inherits from the host,
	// over it (e.g. GOGC, GOMEMLIMIT, GOMAXPROCS for the plugin's Go
	// runtime); the handshake's own variables (ReservedEnv) are left out.
	Env map[string]string
	// Kind is the kind the plugin must report.
	Kind string
	// Instance names the plugin in logs and errors: "<kind>.<name>".
	Instance string
	// Logger receives the plugin's own log lines, under Logger.Named(Instance).
	Logger hclog.Logger
	// StartTimeout bounds the handshake (default 10s).
	StartTimeout time.Duration
	// DialOptions are added to the connection's gRPC options.
	DialOptions []grpc.DialOption
	// SocketDir is the directory (it must exist) in which go-plugin makes
	// the plugin's socket dir ("plugin-dir*"), removed when the plugin is
	// killed. Empty means the system's temp dir: a host that can be killed
	// sets it to a dir of its own that it sweeps at start.
	SocketDir string
}

// Info is what a plugin says of itself.
type Info struct {
	Kind         string
	Name         string
	Version      string
	Capabilities []string
}

// Process is one running plugin process, seen from the host.
type Process struct {
	cfg    LaunchConfig
	client *plugin.Client
	run    *processRunner
	conn   *grpc.ClientConn
	base   pluginv1.BaseClient
	info   Info
}

// Launch starts the plugin, completes the handshake and checks the kind it
// reports. The returned process is not configured yet. A refusal that is
// about the host's settings for the plugin is a *LaunchError.
func Launch(ctx context.Context, cfg LaunchConfig) (*Process, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Instance == "" {
		cfg.Instance = cfg.Kind
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	// go-plugin names the socket <SocketDir>/plugin-dir<n>/plugin<n>, each
	// n up to 10 digits; a unix socket path has 107 bytes at most.
	if n := len(cfg.SocketDir) + len("/plugin-dir/plugin") + 20; cfg.SocketDir != "" && n > 107 {
		return nil, fmt.Errorf("%s: socket dir %s is too long for the plugin's unix socket (%d of 107 bytes): choose a shorter state dir: %w",
			cfg.Instance, cfg.SocketDir, n, errdefs.ErrInvalidArgument)
	}
	exe, err := openExecutable(cfg.Instance, cfg.Path, cfg.SHA256)
	if err != nil {
		return nil, err
	}
	// exe stays open until the process has started: the child executes this
	// very file through /proc, whatever happens to the path meanwhile.
	defer exe.Close()

	run := &processRunner{exe: exe, path: cfg.Path, name: cfg.Instance, env: cfg.Env, done: make(chan struct{}),
		logger: cfg.Logger.Named(cfg.Instance)}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: hostPlugins(),
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
			return run, run.prepare(spec.Env)
		},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		// go-plugin's own lines name the instance; the plugin's log lines
		// are relayed by the runner (logStderr).
		Logger:          cfg.Logger.Named(cfg.Instance),
		StartTimeout:    cfg.StartTimeout,
		GRPCDialOptions: append(wire.DialOptions(), cfg.DialOptions...),
		// The plugin is told the dir in PLUGIN_UNIX_SOCKET_DIR.
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: cfg.SocketDir},
	})
	fail := func(err error) (*Process, error) {
		client.Kill()
		return nil, err
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(&LaunchError{Setting: "path", Err: handshakeError(cfg, err)})
	}
	raw, err := rpc.Dispense(cfg.Kind)
	if err != nil {
		return fail(&LaunchError{Setting: "kind", Err: fmt.Errorf("%s: %s does not serve the %q kind: %v: %w", cfg.Instance, cfg.Path, cfg.Kind, err, errdefs.ErrFailedPrecondition)})
	}
	p := &Process{cfg: cfg, client: client, run: run, conn: raw.(*grpc.ClientConn)}
	p.base = pluginv1.NewBaseClient(p.conn)
	info, err := p.base.Info(ctx, &pluginv1.InfoRequest{})
	if err != nil {
		return fail(fmt.Errorf("%s: %s: info: %w", cfg.Instance, cfg.Path, err))
	}
	p.info = Info{Kind: info.Kind, Name: info.Name, Version: info.Version, Capabilities: info.Capabilities}
	if info.Kind != cfg.Kind {
		return fail(&LaunchError{Setting: "kind", Err: fmt.Errorf("%s: %s is a %q plugin, the config declares it %q: %w",
			cfg.Instance, cfg.Path, info.Kind, cfg.Kind, errdefs.ErrFailedPrecondition)})
	}
	return p, nil
}

// LaunchError is a plugin launch refused because of one of the host's
// settings for it: Setting is "path" (missing, not executable, not a keel
// plugin, another protocol), "sha256" (the executable's digest differs) or
// "kind" (the plugin serves another kind), so a host can point at it.
type LaunchError struct {
	Setting string
	Err     error
}

func (e *LaunchError) Error() string { return e.Err.Error() }
func (e *LaunchError) Unwrap() error { return e.Err }

// handshakeError explains a failed go-plugin handshake in one line.
func handshakeError(cfg LaunchConfig, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(strings.ToLower(msg), "incompatible api version"):
		return fmt.Errorf("%s: %s speaks another plugin protocol than keeld (%d): %s: %w",
			cfg.Instance, cfg.Path, sdk.ProtocolVersion, firstLine(msg), errdefs.ErrFailedPrecondition)
	case strings.Contains(msg, "timeout while waiting"):
		return fmt.Errorf("%s: %s did not complete the keel handshake within %s: %w",
			cfg.Instance, cfg.Path, cfg.StartTimeout, errdefs.ErrFailedPrecondition)
	default:
		why := firstLine(msg)
		// go-plugin reports the first line the program printed, empty when
		// it printed nothing and exited.
		if junk, ok := strings.CutPrefix(why, "Unrecognized remote plugin message:"); ok {
			why = fmt.Sprintf("it printed %q instead of the handshake", strings.TrimSpace(junk))
			if strings.TrimSpace(junk) == "" {
				why = "it exited without a handshake"
			}
		}
		return fmt.Errorf("%s: %s is not a keel plugin: %s: %w",
			cfg.Instance, cfg.Path, why, errdefs.ErrFailedPrecondition)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// openExecutable opens the plugin file and, when want is set, checks its
// sha256 from the open file. Its refusals are LaunchErrors of instance.
func openExecutable(instance, path, want string) (*os.File, error) {
	refuse := func(setting string, err error) (*os.File, error) {
		return nil, &LaunchError{Setting: setting, Err: fmt.Errorf("%s: %w", instance, err)}
	}
	f, err := os.Open(path)
	if err != nil {
		return refuse("path", fmt.Errorf("plugin executable: %w", notFoundOr(err)))
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		f.Close()
		return refuse("path", fmt.Errorf("plugin executable %s is not an executable file: %w", path, errdefs.ErrFailedPrecondition))
	}
	if want == "" {
		return f, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return refuse("path", err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if !strings.EqualFold(got, strings.TrimPrefix(want, "sha256:")) {
		f.Close()
		return refuse("sha256", fmt.Errorf("plugin executable %s: sha256 mismatch: config wants %s, file has %s: %w",
			path, strings.TrimPrefix(want, "sha256:"), got, errdefs.ErrFailedPrecondition))
	}
	return f, nil
}

func notFoundOr(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%v: %w", err, errdefs.ErrNotFound)
	}
	return err
}

// Info is what the plugin reported at launch.
func (p *Process) Info() Info { return p.info }

// Pid of the plugin process.
func (p *Process) Pid() int { return p.run.pid }

// Conn is the gRPC connection to the plugin; the kind packages wrap it.
func (p *Process) Conn() *grpc.ClientConn { return p.conn }

// Done is closed when the plugin process has exited.
func (p *Process) Done() <-chan struct{} { return p.run.done }

// Configure hands the plugin its config block (JSON) and directories, and
// returns the capabilities of the configured implementation.
func (p *Process) Configure(ctx context.Context, root, state string, config json.RawMessage) ([]string, error) {
	if len(config) == 0 {
		config = json.RawMessage("{}")
	}
	resp, err := p.base.Configure(ctx, &pluginv1.ConfigureRequest{
		Config: config, Root: root, State: state, Instance: p.cfg.Instance,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: configure: %w", p.cfg.Instance, err)
	}
	p.info.Capabilities = resp.Capabilities
	return resp.Capabilities, nil
}

// Ping checks that the plugin answers.
func (p *Process) Ping(ctx context.Context) error {
	_, err := p.base.Info(ctx, &pluginv1.InfoRequest{})
	return err
}

// killGrace bounds a graceful stop: a plugin that does not answer the
// shutdown request (hung, or stopped by a signal) is then killed.
const killGrace = 5 * time.Second

// Kill stops the plugin: gracefully first, then with SIGKILL. It returns
// once the process is gone, even when the plugin no longer answers.
func (p *Process) Kill() {
	done := make(chan struct{})
	go func() {
		p.client.Kill()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(killGrace):
		// go-plugin's graceful path has no deadline of its own; killing the
		// process breaks the connection it waits on.
		_ = p.run.Kill(context.Background())
		<-done
	}
}

// processRunner starts the plugin as go-plugin's runner: its own process
// group, SIGKILL when keeld dies, and the executable taken from the open file
// that was checked.
type processRunner struct {
	exe  *os.File
	path string
	name string
	env  map[string]string
	cmd  *exec.Cmd
	pid  int

	logger   hclog.Logger
	stdout   io.ReadCloser
	stderr   *os.File // read end; the child has the write end
	done     chan struct{}
	doneOnce sync.Once
}

func (r *processRunner) prepare(env []string) error {
	// The child executes the checked file as its fd 3, an inherited
	// descriptor rather than the host's close-on-exec one: so an interpreter
	// (a wrapper script with #!) can open /proc/self/fd/3 too.
	r.cmd = &exec.Cmd{
		Path:       "/proc/self/fd/3",
		Args:       []string{r.path},
		Env:        append(r.environ(env), sdk.EnvLogLevel+"="+r.logger.GetLevel().String()),
		ExtraFiles: []*os.File{r.exe},
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	var err error
	if r.stdout, err = r.cmd.StdoutPipe(); err != nil {
		return err
	}
	// A plain pipe rather than StderrPipe: Wait does not close it, so the
	// exit is seen even while a child of the plugin still holds stderr.
	var w *os.File
	if r.stderr, w, err = os.Pipe(); err != nil {
		return err
	}
	r.cmd.Stderr = w
	return nil
}

// environ is the child's environment: go-plugin's (the host's and the
// handshake's) with the configured variables last, so they win over the
// host's; the handshake's own (ReservedEnv) are not theirs to set. The
// host's systemd notify socket is its own: a plugin (and the runc under a
// runtime plugin, whose start would wait for READY=1 from the container)
// must not see it.
func (r *processRunner) environ(env []string) []string {
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "NOTIFY_SOCKET=") })
	for _, k := range slices.Sorted(maps.Keys(r.env)) {
		if !ReservedEnv(k) {
			env = append(env, k+"="+r.env[k])
		}
	}
	return env
}

// ReservedEnv says whether an environment variable is the plugin
// handshake's (go-plugin's PLUGIN_*, keel's KEEL_PLUGIN*): LaunchConfig.Env
// cannot set it.
func ReservedEnv(name string) bool {
	return strings.HasPrefix(name, "PLUGIN_") || strings.HasPrefix(name, "KEEL_PLUGIN")
}

func (r *processRunner) Start(context.Context) error {
	if err := StartLocked(r.cmd); err != nil {
		r.doneOnce.Do(func() { close(r.done) })
		r.cmd.Stderr.(*os.File).Close()
		r.stderr.Close()
		return fmt.Errorf("start %s: %w", r.path, err)
	}
	r.cmd.Stderr.(*os.File).Close()
	r.pid = r.cmd.Process.Pid
	go logStderr(r.logger, r.stderr)
	return nil
}

func (r *processRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	r.doneOnce.Do(func() { close(r.done) })
	return err
}

func (r *processRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	select {
	case <-r.done:
	default:
		// The plugin's whole process group: a child still holding the
		// plugin's stdout keeps go-plugin waiting for EOF before it reaps
		// the plugin (a shell script's sleep, say), and would be orphaned.
		// Only before the reap, when the group id is surely still ours.
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

func (r *processRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *processRunner) Stderr() io.ReadCloser { return io.NopCloser(strings.NewReader("")) }
func (r *processRunner) Name() string          { return r.name }
func (r *processRunner) ID() string            { return strconv.Itoa(r.pid) }
func (r *processRunner) Diagnose(context.Context) string {
	return "the file may be built for another architecture, lack libraries, or not serve keel's plugin handshake"
}
func (r *processRunner) PluginToHost(n, a string) (string, string, error) { return n, a, nil }
func (r *processRunner) HostToPlugin(n, a string) (string, string, error) { return n, a, nil }

// The parent death signal fires when the thread that forked the child exits,
// not the process, so every plugin is forked from one OS thread that lives
// as long as keeld.
var (
	forkOnce sync.Once
	forkReq  chan forkRequest
)

type forkRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// StartLocked starts cmd from that thread: a child with a parent death
// signal (Pdeathsig) then gets it when keeld ends, not when whichever
// thread forked it exits (a Go thread locked for a namespace and ended
// with its goroutine, say).
func StartLocked(cmd *exec.Cmd) error {
	forkOnce.Do(func() {
		forkReq = make(chan forkRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for req := range forkReq {
				req.done <- req.cmd.Start()
			}
		}()
	})
	req := forkRequest{cmd: cmd, done: make(chan error, 1)}
	forkReq <- req
	return <-req.done
}
