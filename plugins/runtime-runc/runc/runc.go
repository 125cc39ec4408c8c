// Package runc is keel's runtime plugin over runc (or crun): a router that
// starts a shim per task (keel-runtime-runc-shim beside the plugin's
// executable, else this binary again in shim mode; see package shim) and
// talks to each over its unix socket. Tasks outlive the plugin:
// a restarted plugin finds its shims again from its state directory.
//
// # A shim is dead only when its process is gone
//
// The plugin decides that a shim died by its process alone (pid and start
// time, see shim.Process), never because a call to it was slow: the price
// of a wrong guess is the user's container, which shimDied kills. A shim
// whose process lives but does not answer (stopped, swapping, starved of
// CPU) makes its task "unknown", with the reason, while the plugin keeps
// trying to reach it with a bounded backoff and no deadline; calls on the
// task fail with Unavailable meanwhile, and nothing is killed. Once the
// shim answers, the task is what the shim says.
//
// # State directory
//
//	<state>/tasks/<id>/task.json      what the shim was started with
//	<state>/tasks/<id>/shim.json      the shim process: pid and start time
//	<state>/tasks/<id>/bundle/        OCI bundle: config.json, rootfs/ (mounted by the shim)
//	<state>/tasks/<id>/exit.json      the init process's exit, written durably by the shim
//	<state>/tasks/<id>/shim.log       the shim's stderr
//	<state>/s/<hash>.sock             the shim's socket (short, for sun_path)
//	<state>/s/<hash>.tmp/             the shim's TMPDIR (runc's console socket)
//	<state>/runc/                     the OCI runtime's --root
package runc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gorunc "github.com/containerd/go-runc"
	"github.com/hashicorp/go-hclog"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shimclient"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/sweep"
)

// Config is the plugin's `config {}` block.
type Config struct {
	// Runtime is the OCI runtime binary, a name looked up in PATH or a
	// path: runc (default) or crun.
	Runtime string `json:"runtime"`
	// RuntimeRoot is the runtime's --root (default <state>/runc).
	RuntimeRoot string `json:"runtime_root"`
	// CgroupParent is where a spec without cgroupsPath puts its task
	// (default /keel): <parent>/<id>.
	CgroupParent string `json:"cgroup_parent"`
	// OCIVersion, when set, replaces the spec's ociVersion in config.json:
	// crun 1.8 refuses the 1.3.0 that runtime-spec writes ("unknown version
	// specified") but runs the same spec labelled 1.1.0.
	OCIVersion string `json:"oci_version"`
	// ShimSHA256, when set, is the hex digest the shim executable
	// (keel-runtime-runc-shim beside the plugin's) must have, checked as
	// keeld checks a plugin's sha256.
	ShimSHA256 string `json:"shim_sha256"`
}

// Bounds of the shim connections. None of them makes a shim dead (only
// its process's end does): past one, the task is reported unknown and the
// shim tried again.
const (
	// probeTimeout bounds one attempt to reach a shim (connect, then a
	// State call answered); the plugin's start waits this long at most for
	// its shims, in parallel.
	probeTimeout = 2 * time.Second
	// retryMin and retryMax bound the backoff between the checks of a
	// shim that does not answer: its process, then a new connection when
	// the last one broke. There is no overall limit while it lives.
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
	// stateTimeout bounds a State or List answer: a shim slower than this
	// is reported unknown in that answer.
	stateTimeout = 5 * time.Second
	// startTimeout bounds a shim's start (runc create included): a create
	// not done by then fails, and what it made is undone.
	startTimeout = 30 * time.Second
	// deleteWait bounds waiting for a deleted task's last events.
	deleteWait = 5 * time.Second
)

// pollTimeout is how long a shim holds an events call open; one not back
// pollGrace later reports the task unknown. Variables for tests.
var (
	pollTimeout = 30 * time.Second
	pollGrace   = 10 * time.Second
)

// Exit status reported for a task whose shim died before recording one.
const deadShimStatus = 255

// Runtime is the runc runtime plugin.
type Runtime struct {
	cfg   Config
	state string
	exe   string
	// shimExe is the shim executable, opened (and checked) once: shims
	// run this very file through /proc, whatever happens to its path
	// later. Nil when there is none beside the plugin: its own executable
	// is then the shim (`keel-runtime-runc shim DIR`).
	shimExe *os.File
	logger  hclog.Logger
	broker  *broker

	ctx    context.Context // ends at Close: stops the event pollers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	tasks map[string]*task
}

var (
	_ keelruntime.Runtime     = (*Runtime)(nil)
	_ keelruntime.LogReopener = (*Runtime)(nil)
	_ sdk.Capable             = (*Runtime)(nil)
)

// task is the plugin's handle on a task's shim.
type task struct {
	id   string
	dir  string
	cfg  shim.Config
	proc shim.Process
	// listed is set once the task is created (or found again): until
	// then calls answer NotFound.
	listed atomic.Bool
	// pid is the init process's pid as last known, reported while the
	// shim does not answer.
	pid atomic.Uint32

	mu     sync.Mutex
	client *shimclient.Client // nil while there is no connection
	// unknown says why the shim does not answer, "" while it does;
	// answered is closed while it does.
	unknown  string
	answered chan struct{}

	// gone closes when the shim is known dead; dead* say what was found.
	gone       chan struct{}
	goneOnce   sync.Once
	deadReason string
	deadExit   keelruntime.ExitStatus
	exitSeen   atomic.Bool // the init exit was forwarded
	// startSeen is set when the init start event was forwarded, started
	// holds the init pid once Start succeeded: a shim that dies between the
	// two still owes its start event, which shimDied then sends.
	startSeen atomic.Bool
	started   atomic.Uint32
	// createSeen and created are the same for the create event: the shim
	// may die before the poller has read it.
	createSeen atomic.Bool
	created    atomic.Uint32

	pollerDone chan struct{}
	forgotten  sync.Once // the task left the table (see forget)
}

func newTask(id, dir string) *task {
	return &task{id: id, dir: dir, gone: make(chan struct{}), pollerDone: make(chan struct{}), answered: make(chan struct{})}
}

func (t *task) dead() bool {
	select {
	case <-t.gone:
		return true
	default:
		return false
	}
}

// conn returns the shim's connection and, when it does not answer, why.
func (t *task) conn() (*shimclient.Client, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.client, t.unknown
}

// waitAnswer returns a channel closed while the shim answers.
func (t *task) waitAnswer() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.answered
}

// answering records that the shim answered on c.
func (t *task) answering(c *shimclient.Client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.client, t.unknown = c, ""
	select {
	case <-t.answered:
	default:
		close(t.answered)
	}
}

// notAnswering records why the shim does not answer; a broken connection c
// is dropped, so the next attempt makes a new one.
func (t *task) notAnswering(c *shimclient.Client, reason string, broken bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if broken && c != nil && t.client == c {
		t.client = nil
		c.Close()
	}
	t.unknown = reason
	select {
	case <-t.answered:
		t.answered = make(chan struct{})
	default:
	}
}

// callFailed records a call on c that failed for want of an answer: a
// broken connection or, with timedOut, no reply in time.
func (t *task) callFailed(c *shimclient.Client, method string, err error, timedOut bool) {
	switch {
	case errors.Is(err, shimclient.ErrConnection):
		t.notAnswering(c, fmt.Sprintf("%s not answering: %v", t.proc, err), true)
	case timedOut:
		t.notAnswering(c, fmt.Sprintf("%s not answering: no reply to %s", t.proc, strings.ToLower(method)), false)
	}
}

// New configures the plugin and reconnects to the shims of its state dir.
func New(ctx context.Context, env sdk.Env) (keelruntime.Runtime, error) {
	var cfg Config
	if err := env.DecodeConfig(&cfg); err != nil {
		return nil, err
	}
	if cfg.Runtime == "" {
		cfg.Runtime = "runc"
	}
	bin, err := exec.LookPath(cfg.Runtime)
	if err != nil {
		return nil, fmt.Errorf("runtime %q: %v: %w", cfg.Runtime, err, errdefs.ErrFailedPrecondition)
	}
	cfg.Runtime = bin
	if cfg.RuntimeRoot == "" {
		cfg.RuntimeRoot = filepath.Join(env.State, "runc")
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/keel"
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	for _, d := range []string{filepath.Join(env.State, "tasks"), filepath.Join(env.State, "s"), cfg.RuntimeRoot} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	shimExe, err := openShim(filepath.Join(filepath.Dir(exe), shim.Executable), cfg.ShimSHA256)
	if err != nil {
		return nil, err
	}
	logger := env.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	rctx, cancel := context.WithCancel(context.Background())
	if shimExe == nil {
		logger.Info("no shim executable beside the plugin: the plugin's own executable is the shim", "missing", filepath.Join(filepath.Dir(exe), shim.Executable))
	}
	r := &Runtime{
		cfg: cfg, state: env.State, exe: exe, shimExe: shimExe, logger: logger,
		broker: newBroker(), ctx: rctx, cancel: cancel, tasks: map[string]*task{},
	}
	if err := r.reconnect(ctx); err != nil {
		cancel()
		if shimExe != nil {
			shimExe.Close()
		}
		return nil, err
	}
	r.sweep()
	return r, nil
}

// openShim opens the shim executable at path and, when want is set,
// checks its sha256 from the open file, as keeld checks a plugin's. A
// missing shim is nil, unless a digest is wanted.
func openShim(path, want string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && want == "" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shim executable: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		f.Close()
		return nil, fmt.Errorf("shim executable %s is not an executable file: %w", path, errdefs.ErrFailedPrecondition)
	}
	if want == "" {
		return f, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, strings.TrimPrefix(want, "sha256:")) {
		f.Close()
		return nil, fmt.Errorf("shim executable %s: sha256 mismatch: config wants %s, file has %s: %w",
			path, strings.TrimPrefix(want, "sha256:"), got, errdefs.ErrFailedPrecondition)
	}
	return f, nil
}

// shimTmp is the TMPDIR of the shim whose socket is socket: what it makes
// there (runc's console socket) stays in the state dir, and goes with the
// task.
func shimTmp(socket string) string { return strings.TrimSuffix(socket, ".sock") + ".tmp" }

// sweep removes, once the tasks are found again, the sockets and temp dirs
// under <state>/s that no task owns: those of a plugin or shim killed
// before its task was recorded or after it was removed.
func (r *Runtime) sweep() {
	own := map[string]bool{}
	r.mu.Lock()
	for _, t := range r.tasks {
		own[t.cfg.Socket], own[shimTmp(t.cfg.Socket)] = true, true
	}
	r.mu.Unlock()
	removed, err := sweep.Sweep([]string{filepath.Join(r.state, "s", "*")}, func(p string) bool { return own[p] })
	for _, l := range removed {
		r.logger.Info("removed what a killed plugin or shim left", "kind", l.Kind, "path", l.Path)
	}
	if err != nil {
		r.logger.Warn("sweeping what a killed plugin or shim left", "error", err)
	}
}

// Capabilities: cri-log (the shims write CRI logs; reopen-log, which the
// sdk finds on the type, reopens one), rro-mounts when the OCI runtime
// and the kernel can make a mount recursively read-only, and checkpoint when
// CRIU works here (`criu check` passes; it does not on kernels newer than
// the CRIU release knows, e.g. Debian 12's CRIU 3.17 on 6.x kernels:
// "vdso: Unexpected rt vDSO area bounds"). Checkpoint is tried either
// way, and fails with CRIU's own errors.
func (r *Runtime) Capabilities() []string {
	caps := []string{keelruntime.CapabilityCRILog}
	if err := rroCheck(r.cfg.Runtime); err != nil {
		r.logger.Info("recursive read-only mounts unavailable", "reason", err)
	} else {
		caps = append(caps, keelruntime.CapabilityRecursiveReadOnly)
	}
	if err := criuCheck(); err != nil {
		r.logger.Info("checkpoint unavailable", "reason", err)
		return caps
	}
	return append(caps, keelruntime.CapabilityCheckpoint)
}

// validLog checks the log io asks the shim to write.
func validLog(io keelruntime.IO) error {
	switch {
	case io.LogPath == "":
		if io.LogMaxSize != 0 || io.LogMaxFiles != 0 {
			return fmt.Errorf("log rotation without a log path: %w", errdefs.ErrInvalidArgument)
		}
	case !filepath.IsAbs(io.LogPath):
		return fmt.Errorf("log path %q is not absolute: %w", io.LogPath, errdefs.ErrInvalidArgument)
	case io.LogMaxSize < 0 || io.LogMaxFiles < 0:
		return fmt.Errorf("log max size %d, max files %d: %w", io.LogMaxSize, io.LogMaxFiles, errdefs.ErrInvalidArgument)
	}
	return nil
}

// criuCheck runs `criu check` once per process.
var criuCheck = sync.OnceValue(func() error {
	path, err := exec.LookPath("criu")
	if err != nil {
		return err
	}
	out, err := exec.Command(path, "check").CombinedOutput()
	if err != nil {
		return fmt.Errorf("criu check: %v: %s", err, lastOf(string(out)))
	}
	return nil
})

// rroCheck says why the OCI runtime at path cannot make recursively
// read-only mounts, nil when it can: it must list "rro" among its mount
// options (`runtime features`, the runtime-spec's features document), and
// the kernel must have mount_setattr, which it uses for them (probed with
// a bad fd: EBADF when the call exists, ENOSYS when not).
func rroCheck(path string) error {
	out, err := exec.Command(path, "features").Output()
	if err != nil {
		return fmt.Errorf("%s features: %w", path, err)
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return fmt.Errorf("%s features: %w", path, err)
	}
	if !slices.Contains(f.MountOptions, "rro") {
		return fmt.Errorf("%s does not know the mount option rro", path)
	}
	if err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH, &unix.MountAttr{}); errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("the kernel has no mount_setattr (Linux 5.12): %w", err)
	}
	return nil
}

func lastOf(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// reconnect finds the shims of the state dir again, in parallel: a live
// one is connected (or, when it does not answer in time, reported unknown
// and tried again in the background), a dead one's task reported exited
// with a reason.
func (r *Runtime) reconnect(ctx context.Context) error {
	entries, err := os.ReadDir(filepath.Join(r.state, "tasks"))
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(64)
	for _, e := range entries {
		dir := filepath.Join(r.state, "tasks", e.Name())
		g.Go(func() error {
			b, err := os.ReadFile(filepath.Join(dir, shim.ConfigFile))
			var cfg shim.Config
			if err == nil {
				err = json.Unmarshal(b, &cfg)
			}
			if err != nil {
				// A create that never got its shim going (task.json is
				// written before the shim starts).
				r.logger.Warn("removing incomplete task dir", "dir", dir, "error", err)
				removeTaskDir(dir)
				return nil
			}
			t := newTask(cfg.ID, dir)
			t.cfg = cfg
			if pid, err := readPid(filepath.Join(dir, shim.InitPid)); err == nil {
				t.pid.Store(pid)
			}
			t.proc, err = shim.LoadProcess(dir)
			if err != nil {
				r.logger.Warn("shim process record unreadable", "task", t.id, "error", err)
			}
			r.mu.Lock()
			r.tasks[t.id] = t
			r.mu.Unlock()
			t.listed.Store(true)
			if alive, _ := t.proc.Alive(); !alive {
				close(t.pollerDone)
				r.shimDied(t, fmt.Sprintf("shim exited while the plugin was down (%s gone)", t.proc))
				return nil
			}
			if err := r.probe(ctx, t); errdefs.IsNotFound(err) {
				// Deleted under the last plugin, which died before it let
				// the shim go.
				r.letGo(t)
				return nil
			}
			r.startPoller(t)
			return nil
		})
	}
	return g.Wait()
}

// probe tries once to reach t's shim: a connection and a State call
// answered within probeTimeout. It records the outcome, and returns the
// shim's answer when it is an error (NotFound: the task is deleted).
func (r *Runtime) probe(ctx context.Context, t *task) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, _ := t.conn()
	if c == nil {
		var err error
		if c, err = shimclient.Dial(ctx, t.cfg.Socket); err != nil {
			t.notAnswering(nil, fmt.Sprintf("%s not answering: %v", t.proc, err), false)
			return nil
		}
		t.mu.Lock()
		t.client = c
		t.mu.Unlock()
	}
	err := c.Call(ctx, "State", shim.ProcessRequest{}, &shim.StateReply{})
	if err != nil && (errors.Is(err, shimclient.ErrConnection) || ctx.Err() != nil) {
		t.callFailed(c, "state", err, ctx.Err() != nil)
		return nil
	}
	t.answering(c)
	return err
}

// letGo ends the shim of a task deleted under a plugin that died before it
// let the shim go: it forwards the events the dead plugin did not
// acknowledge (the delete among them), ends the shim and forgets the task.
// Left listed, the task would stay unknown as long as its idle shim lives.
func (r *Runtime) letGo(t *task) {
	defer close(t.pollerDone)
	r.logger.Info("task deleted while the plugin was down: ending its shim", "task", t.id, "pid", t.proc.Pid)
	c, _ := t.conn()
	ctx, cancel := context.WithTimeout(r.ctx, stateTimeout)
	defer cancel()
	var reply shim.EventsReply
	if err := c.Call(ctx, "Events", shim.EventsRequest{Timeout: time.Millisecond}, &reply); err == nil && len(reply.Events) > 0 {
		for _, ev := range reply.Events {
			r.broker.publish(keelruntime.Event(ev.Event))
		}
		c.Call(ctx, "Events", shim.EventsRequest{After: reply.Events[len(reply.Events)-1].Seq, Timeout: time.Millisecond}, &shim.EventsReply{})
	}
	if err := c.Call(ctx, "Shutdown", shim.Empty{}, &shim.Empty{}); err != nil {
		r.logger.Warn("ending the shim of a deleted task", "task", t.id, "error", err)
	}
	c.Close()
	r.forget(t)
}

// reach waits until t's shim answers (true) or its process is gone
// (false, once shimDied reported it), checking its process and trying
// again with a bounded backoff, without an overall limit: a shim that is
// merely slow is never given up. It returns false at Close too.
func (r *Runtime) reach(t *task) bool {
	wait := retryMin
	var (
		probe      chan error // the State call in flight on probed, if any
		probed     *shimclient.Client
		probeStart time.Time
	)
	for {
		alive, aerr := t.proc.Alive()
		if !alive {
			r.shimDied(t, t.proc.String()+" exited")
			return false
		}
		if aerr != nil {
			r.logger.Warn("cannot look at the shim process; taken for alive", "task", t.id, "error", aerr)
		}
		c, _ := t.conn()
		if c == nil {
			dctx, cancel := context.WithTimeout(r.ctx, probeTimeout)
			nc, err := shimclient.Dial(dctx, t.cfg.Socket)
			cancel()
			if err != nil {
				t.notAnswering(nil, fmt.Sprintf("%s not answering: %v", t.proc, err), false)
			} else {
				t.mu.Lock()
				t.client = nc
				t.mu.Unlock()
				c = nc
			}
		}
		if c != nil && c != probed {
			// One State call at a time: it stays in flight until the shim
			// answers it or the connection breaks.
			probe, probed, probeStart = make(chan error, 1), c, time.Now()
			go func() { probe <- c.Call(r.ctx, "State", shim.ProcessRequest{}, &shim.StateReply{}) }()
		}
		timer := time.NewTimer(wait)
		select {
		case err := <-probe:
			timer.Stop()
			if r.ctx.Err() != nil {
				return false
			}
			if !errors.Is(err, shimclient.ErrConnection) {
				r.logger.Info("shim answers again", "task", t.id, "pid", t.proc.Pid)
				t.answering(probed)
				return true
			}
			t.callFailed(probed, "state", err, false)
			probe, probed = nil, nil
		case <-timer.C:
			if probe != nil {
				t.notAnswering(nil, fmt.Sprintf("%s not answering: no reply to state for %s", t.proc,
					time.Since(probeStart).Round(time.Second)), false)
			}
		case <-r.ctx.Done():
			timer.Stop()
			return false
		}
		wait = min(wait*2, retryMax)
	}
}

// validID refuses ids that cannot name a directory.
func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || len(id) > 200 {
		return fmt.Errorf("task id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Create writes the bundle and starts the task's shim, which mounts the
// rootfs and creates the container.
func (r *Runtime) Create(ctx context.Context, opts keelruntime.CreateOpts) (uint32, error) {
	if err := validID(opts.ID); err != nil {
		return 0, err
	}
	if opts.Spec == nil {
		return 0, fmt.Errorf("task %q: no spec: %w", opts.ID, errdefs.ErrInvalidArgument)
	}
	if err := validLog(opts.IO); err != nil {
		return 0, fmt.Errorf("task %q: %w", opts.ID, err)
	}
	r.mu.Lock()
	if _, ok := r.tasks[opts.ID]; ok {
		r.mu.Unlock()
		return 0, fmt.Errorf("task %q: %w", opts.ID, errdefs.ErrAlreadyExists)
	}
	t := newTask(opts.ID, filepath.Join(r.state, "tasks", opts.ID))
	r.tasks[opts.ID] = t // reserved; removed again on failure
	r.mu.Unlock()

	pid, err := r.create(ctx, t, opts)
	if err != nil {
		r.mu.Lock()
		delete(r.tasks, opts.ID)
		r.mu.Unlock()
		if t.cfg.Socket != "" {
			os.RemoveAll(shimTmp(t.cfg.Socket))
		}
		removeTaskDir(t.dir)
		return 0, err
	}
	t.pid.Store(pid)
	t.listed.Store(true)
	r.startPoller(t)
	return pid, nil
}

func (r *Runtime) create(ctx context.Context, t *task, opts keelruntime.CreateOpts) (uint32, error) {
	if removeTaskDir(t.dir); fileExists(t.dir) {
		return 0, fmt.Errorf("task %q: a stale task dir %s is in the way (its rootfs still mounted): %w", opts.ID, t.dir, errdefs.ErrFailedPrecondition)
	}
	bundle := filepath.Join(t.dir, shim.BundleDir)
	if err := os.MkdirAll(bundle, 0o711); err != nil {
		return 0, err
	}
	spec := *opts.Spec
	if err := checkOOMScoreAdj(spec.Process); err != nil {
		return 0, fmt.Errorf("task %q: %w", opts.ID, err)
	}
	if len(opts.Rootfs) > 0 {
		root := specs.Root{Path: "rootfs"}
		if spec.Root != nil {
			root.Readonly = spec.Root.Readonly
		}
		spec.Root = &root
	} else if spec.Root == nil || !filepath.IsAbs(spec.Root.Path) {
		return 0, fmt.Errorf("task %q: no rootfs mounts and no absolute root path: %w", opts.ID, errdefs.ErrInvalidArgument)
	}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	} else {
		l := *spec.Linux
		spec.Linux = &l
	}
	if spec.Linux.CgroupsPath == "" {
		spec.Linux.CgroupsPath = filepath.Join(r.cfg.CgroupParent, opts.ID)
	}
	if r.cfg.OCIVersion != "" {
		spec.Version = r.cfg.OCIVersion
	}
	b, err := json.Marshal(&spec)
	if err != nil {
		return 0, fmt.Errorf("spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return 0, err
	}
	sum := sha256.Sum256([]byte(opts.ID))
	t.cfg = shim.Config{
		ID:          opts.ID,
		Bundle:      bundle,
		Socket:      filepath.Join(r.state, "s", hex.EncodeToString(sum[:8])+".sock"),
		Runtime:     r.cfg.Runtime,
		RuntimeRoot: r.cfg.RuntimeRoot,
		IO:          shim.IO(opts.IO),
		Checkpoint:  opts.Checkpoint,
		CgroupPath:  spec.Linux.CgroupsPath,
	}
	if b, err = json.Marshal(&t.cfg); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(t.dir, shim.ConfigFile), b, 0o600); err != nil {
		return 0, err
	}
	// The rootfs is mounted here, not in the shim (which then links no
	// sdk), after task.json: a plugin killed from now on leaves a task
	// whose shim its next start finds gone, and unmounts (shimDied); a
	// failed create unmounts in Create.
	if len(opts.Rootfs) > 0 {
		rootfs := filepath.Join(bundle, "rootfs")
		if err := os.MkdirAll(rootfs, 0o755); err != nil {
			return 0, err
		}
		if err := mount.All(opts.Rootfs, rootfs); err != nil {
			return 0, fmt.Errorf("task %q: mount rootfs: %w", opts.ID, err)
		}
	}
	start := time.Now()
	ready, err := r.startShim(ctx, t)
	if err != nil {
		return 0, err
	}
	if ready.Error != "" {
		return 0, shim.ErrorFromCode(ready.Code, fmt.Sprintf("task %q: %s", opts.ID, ready.Error))
	}
	shimReady := time.Since(start)
	// The task exists from here on: a shim that does not answer now makes
	// it unknown, not failed (the poller keeps trying).
	if t.proc, err = shim.LoadProcess(t.dir); err != nil {
		r.logger.Warn("shim process record unreadable", "task", t.id, "error", err)
	}
	r.probe(ctx, t)
	t.created.Store(ready.Pid)
	r.logger.Debug("task created", "task", opts.ID, "shim_ready", shimReady, "took", time.Since(start))
	return ready.Pid, nil
}

// startShim runs this binary in shim mode for t, in a session of its own
// so it outlives the plugin (and the plugin's process group, which keeld
// kills), with none of the plugin's stdio: go-plugin sees the plugin's
// exit by its stdout and stderr closing. It returns the shim's report.
func (r *Runtime) startShim(ctx context.Context, t *task) (shim.Ready, error) {
	rd, wr, err := os.Pipe()
	if err != nil {
		return shim.Ready{}, err
	}
	defer rd.Close()
	logf, err := os.OpenFile(filepath.Join(t.dir, "shim.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		wr.Close()
		return shim.Ready{}, err
	}
	defer logf.Close()
	if err := os.MkdirAll(shimTmp(t.cfg.Socket), 0o700); err != nil {
		wr.Close()
		return shim.Ready{}, err
	}
	path, args := r.exe, []string{"keel-runtime-runc", shim.Arg, t.dir} // the name keel-plugins dispatches on
	if r.shimExe != nil {
		// The open file, through the plugin's own fd (close-on-exec, so
		// the shim does not inherit it).
		path, args = "/proc/"+strconv.Itoa(os.Getpid())+"/fd/"+strconv.Itoa(int(r.shimExe.Fd())), []string{shim.Executable, t.dir}
	}
	cmd := &exec.Cmd{
		Path: path,
		Args: args,
		Dir:  t.dir,
		// One P: the shim mostly waits, and each P costs resident memory
		// (about 0.3 MB PSS per shim); the shim drops the variable again
		// so runc runs with the machine's.
		Env:         []string{"PATH=" + os.Getenv("PATH"), "GOMAXPROCS=1", "TMPDIR=" + shimTmp(t.cfg.Socket)},
		Stderr:      logf,
		ExtraFiles:  []*os.File{wr},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	wr.Close()
	if err != nil {
		return shim.Ready{}, fmt.Errorf("start shim: %w", err)
	}
	// Reaped here while the plugin lives; by init (or keeld, a subreaper)
	// after.
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	// abandon ends a shim whose create is given up (its caller left, or it
	// took longer than startTimeout), and what it may have made: the
	// container and the rootfs mount. The create fails: nothing of it was
	// handed out yet.
	abandon := func() {
		// The shim leads its session's process group, with the runtime it
		// runs.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		rt := &gorunc.Runc{Command: r.cfg.Runtime, Root: r.cfg.RuntimeRoot}
		rt.Delete(context.Background(), t.id, &gorunc.DeleteOpts{Force: true})
	}

	res := make(chan shim.Ready, 1)
	go func() {
		var ready shim.Ready
		if err := json.NewDecoder(rd).Decode(&ready); err != nil {
			ready = shim.Ready{Code: 2, Error: "shim exited before reporting: " + lastLine(filepath.Join(t.dir, "shim.log"))}
		}
		res <- ready
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case ready := <-res:
		return ready, nil
	case <-ctx.Done():
		abandon()
		return shim.Ready{}, ctx.Err()
	case <-timer.C:
		abandon()
		return shim.Ready{}, fmt.Errorf("shim of task %q did not start in %s: %w", t.id, startTimeout, errdefs.ErrUnavailable)
	}
}

// checkOOMScoreAdj refuses, clearly, an oom_score_adj the container could
// not get: lowering it below ours needs CAP_SYS_RESOURCE, which root lacks
// in some sandboxes, and runc then fails with "can't get final child's PID
// from pipe: EOF".
func checkOOMScoreAdj(p *specs.Process) error {
	if p == nil || p.OOMScoreAdj == nil {
		return nil
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return nil
	}
	var own int
	if _, err := fmt.Sscan(string(b), &own); err != nil || *p.OOMScoreAdj >= own {
		return nil
	}
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err == nil && data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0 {
		return nil
	}
	return fmt.Errorf("oom_score_adj %d is below the runtime's %d, which needs CAP_SYS_RESOURCE, and this host's root lacks it: %w",
		*p.OOMScoreAdj, own, errdefs.ErrFailedPrecondition)
}

func readPid(path string) (uint32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	return uint32(n), err
}

// removeTaskDir removes a task's directory once nothing is mounted on its
// rootfs any more: removing through a mounted rootfs would delete the
// container's files.
func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func removeTaskDir(dir string) {
	if err := shim.UnmountAll(filepath.Join(dir, shim.BundleDir, "rootfs")); err != nil {
		return
	}
	os.RemoveAll(dir)
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// startPoller forwards t's events, in order, until its delete event, the
// shim's death or Close. While the shim does not answer, it tries to
// reach it (see reach).
func (r *Runtime) startPoller(t *task) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(t.pollerDone)
		var after uint64
		for {
			c, unknown := t.conn()
			if unknown != "" || c == nil {
				if !r.reach(t) {
					return
				}
				continue
			}
			var reply shim.EventsReply
			ctx, cancel := context.WithTimeout(r.ctx, pollTimeout+pollGrace)
			err := c.Call(ctx, "Events", shim.EventsRequest{After: after, Timeout: pollTimeout}, &reply)
			timedOut := ctx.Err() != nil
			cancel()
			if r.ctx.Err() != nil {
				return
			}
			if err != nil {
				if !errors.Is(err, shimclient.ErrConnection) && !timedOut {
					// An answer all the same.
					r.logger.Warn("events call failed", "task", t.id, "error", err)
					time.Sleep(retryMin)
				}
				t.callFailed(c, "events", err, timedOut)
				continue
			}
			for _, ev := range reply.Events {
				after = ev.Seq
				if ev.Event.ExecID == "" {
					switch ev.Event.Topic {
					case keelruntime.TopicCreate:
						t.createSeen.Store(true)
					case keelruntime.TopicStart:
						t.startSeen.Store(true)
					case keelruntime.TopicExit:
						t.exitSeen.Store(true)
					}
				}
				r.broker.publish(keelruntime.Event(ev.Event))
				if ev.Event.Topic == keelruntime.TopicDelete {
					// Let the shim go: its events go with it, so no
					// acknowledgement first (a plugin that dies before
					// Shutdown leaves the shim to the next, which finds
					// the task deleted and forwards its events again:
					// letGo).
					c.Call(r.ctx, "Shutdown", shim.Empty{}, &shim.Empty{})
					c.Close()
					// Deleted, whoever asked: a plugin that died after
					// the shim's Delete leaves it to this one.
					r.forget(t)
					return
				}
			}
		}
	}()
}

// shimDied reports t's task exited after its shim went away, once its
// process is known gone (never on a slow answer): the exit the shim
// recorded, or deadShimStatus; the container, if still there, is killed
// and its rootfs unmounted, so nothing runs unwatched.
func (r *Runtime) shimDied(t *task, reason string) {
	t.goneOnce.Do(func() {
		r.logger.Warn("task shim is gone", "task", t.id, "reason", reason)
		if c, _ := t.conn(); c != nil {
			c.Close()
		}
		var exit keelruntime.ExitStatus
		b, err := os.ReadFile(filepath.Join(t.dir, shim.ExitFile))
		if err == nil && json.Unmarshal(b, &exit) == nil {
			reason += "; the exit it recorded is kept"
		} else {
			exit = keelruntime.ExitStatus{Status: deadShimStatus, ExitedAt: time.Now()}
			reason += "; container killed"
		}
		rt := &gorunc.Runc{Command: t.cfg.Runtime, Root: t.cfg.RuntimeRoot}
		bg := context.Background()
		rt.Kill(bg, t.id, int(unix.SIGKILL), &gorunc.KillOpts{All: true})
		rt.Delete(bg, t.id, &gorunc.DeleteOpts{Force: true})
		shim.UnmountAll(filepath.Join(t.cfg.Bundle, "rootfs"))
		t.deadReason = reason
		t.deadExit = exit
		if pid := t.created.Load(); pid != 0 && !t.createSeen.Load() {
			r.broker.publish(keelruntime.Event{Topic: keelruntime.TopicCreate, ID: t.id, Pid: pid, Timestamp: time.Now()})
		}
		if pid := t.started.Load(); pid != 0 && !t.startSeen.Load() {
			r.broker.publish(keelruntime.Event{Topic: keelruntime.TopicStart, ID: t.id, Pid: pid, Timestamp: time.Now()})
		}
		if !t.exitSeen.Load() {
			r.broker.publish(keelruntime.Event{Topic: keelruntime.TopicExit, ID: t.id, Pid: exit.Pid,
				ExitStatus: exit.Status, ExitedAt: exit.ExitedAt, Timestamp: time.Now()})
		}
		close(t.gone)
	})
}

func (r *Runtime) get(id string) (*task, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tasks[id]
	if !ok || !t.listed.Load() {
		return nil, fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

// call calls a shim method for a live task: FailedPrecondition naming the
// reason for a dead one, Unavailable naming it for one whose shim does not
// answer.
func (r *Runtime) call(ctx context.Context, id, method string, req, reply any) error {
	t, err := r.get(id)
	if err != nil {
		return err
	}
	c, err := t.answeringConn()
	if err != nil {
		return err
	}
	if err := c.Call(ctx, method, req, reply); err != nil {
		if errors.Is(err, shimclient.ErrConnection) {
			t.callFailed(c, method, err, false)
			return fmt.Errorf("task %q: %w", id, err)
		}
		return err
	}
	return nil
}

// answeringConn returns the connection to t's shim while it answers.
func (t *task) answeringConn() (*shimclient.Client, error) {
	if t.dead() {
		return nil, fmt.Errorf("task %q: %s: %w", t.id, t.deadReason, errdefs.ErrFailedPrecondition)
	}
	c, unknown := t.conn()
	if unknown != "" || c == nil {
		return nil, fmt.Errorf("task %q: %s: %w", t.id, unknown, errdefs.ErrUnavailable)
	}
	return c, nil
}

func (r *Runtime) Start(ctx context.Context, id, execID string) (uint32, error) {
	var reply shim.PidReply
	err := r.call(ctx, id, "Start", shim.ProcessRequest{ExecID: execID}, &reply)
	if err == nil && execID == "" {
		if t, gerr := r.get(id); gerr == nil {
			t.started.Store(reply.Pid)
			t.pid.Store(reply.Pid)
		}
	}
	return reply.Pid, err
}

// Delete removes a stopped process; for the init process it also ends the
// shim once its delete event is forwarded, and removes the task's dir.
func (r *Runtime) Delete(ctx context.Context, id, execID string) (keelruntime.ExitStatus, error) {
	t, err := r.get(id)
	if err != nil {
		return keelruntime.ExitStatus{}, err
	}
	if t.dead() {
		if execID != "" {
			return keelruntime.ExitStatus{}, fmt.Errorf("exec %q in task %q: %w", execID, id, errdefs.ErrNotFound)
		}
		r.broker.publish(keelruntime.Event{Topic: keelruntime.TopicDelete, ID: id, Pid: t.deadExit.Pid,
			ExitStatus: t.deadExit.Status, ExitedAt: t.deadExit.ExitedAt, Timestamp: time.Now()})
		r.forget(t)
		return t.deadExit, nil
	}
	var reply shim.ExitReply
	start := time.Now()
	if err := r.call(ctx, id, "Delete", shim.ProcessRequest{ExecID: execID}, &reply); err != nil {
		return keelruntime.ExitStatus{}, err
	}
	if execID != "" {
		return keelruntime.ExitStatus(reply.Exit), nil
	}
	shimDeleted := time.Since(start)
	select {
	case <-t.pollerDone:
	case <-time.After(deleteWait):
		r.logger.Warn("deleted task's events not drained", "task", id)
	}
	r.forget(t)
	r.logger.Debug("task deleted", "task", id, "shim_delete", shimDeleted, "took", time.Since(start))
	return keelruntime.ExitStatus(reply.Exit), nil
}

// forget removes a deleted task's files, then its entry (so a new task of
// the same id waits for the files to go), once.
func (r *Runtime) forget(t *task) {
	t.forgotten.Do(func() {
		os.Remove(t.cfg.Socket)
		os.RemoveAll(shimTmp(t.cfg.Socket))
		removeTaskDir(t.dir)
		r.mu.Lock()
		if r.tasks[t.id] == t {
			delete(r.tasks, t.id)
		}
		r.mu.Unlock()
	})
}

func (r *Runtime) Kill(ctx context.Context, id, execID string, sig syscall.Signal, all bool) error {
	t, err := r.get(id)
	if err != nil {
		return err
	}
	if t.dead() {
		if all {
			return nil
		}
		return fmt.Errorf("task %q: already exited (%s): %w", id, t.deadReason, errdefs.ErrNotFound)
	}
	return r.call(ctx, id, "Kill", shim.KillRequest{ExecID: execID, Signal: int(sig), All: all}, &shim.Empty{})
}

func (r *Runtime) Exec(ctx context.Context, opts keelruntime.ExecOpts) error {
	if opts.Spec == nil {
		return fmt.Errorf("exec %q: no process spec: %w", opts.ExecID, errdefs.ErrInvalidArgument)
	}
	if err := validLog(opts.IO); err != nil {
		return fmt.Errorf("exec %q: %w", opts.ExecID, err)
	}
	b, err := json.Marshal(opts.Spec)
	if err != nil {
		return fmt.Errorf("exec %q: %v: %w", opts.ExecID, err, errdefs.ErrInvalidArgument)
	}
	return r.call(ctx, opts.ID, "Exec", shim.ExecRequest{ExecID: opts.ExecID, Spec: b, IO: shim.IO(opts.IO)}, &shim.Empty{})
}

func (r *Runtime) ResizePty(ctx context.Context, id, execID string, width, height uint32) error {
	return r.call(ctx, id, "ResizePty", shim.ResizeRequest{ExecID: execID, Width: width, Height: height}, &shim.Empty{})
}

func (r *Runtime) CloseIO(ctx context.Context, id, execID string) error {
	return r.call(ctx, id, "CloseIO", shim.ProcessRequest{ExecID: execID}, &shim.Empty{})
}

// ReopenLog has the task's shim reopen its CRI log (see shim's ReopenLog).
func (r *Runtime) ReopenLog(ctx context.Context, id string) error {
	return r.call(ctx, id, "ReopenLog", shim.Empty{}, &shim.Empty{})
}

func (r *Runtime) Pause(ctx context.Context, id string) error {
	return r.call(ctx, id, "Pause", shim.Empty{}, &shim.Empty{})
}

func (r *Runtime) Resume(ctx context.Context, id string) error {
	return r.call(ctx, id, "Resume", shim.Empty{}, &shim.Empty{})
}

func (r *Runtime) Pids(ctx context.Context, id string) ([]keelruntime.ProcessInfo, error) {
	var reply shim.PidsReply
	err := r.call(ctx, id, "Pids", shim.Empty{}, &reply)
	procs := make([]keelruntime.ProcessInfo, len(reply.Processes))
	for i, p := range reply.Processes {
		procs[i] = keelruntime.ProcessInfo(p)
	}
	return procs, err
}

func (r *Runtime) Checkpoint(ctx context.Context, id string, opts keelruntime.CheckpointOpts) error {
	if !filepath.IsAbs(opts.Path) {
		return fmt.Errorf("checkpoint path %q: not absolute: %w", opts.Path, errdefs.ErrInvalidArgument)
	}
	return r.call(ctx, id, "Checkpoint", shim.CheckpointRequest{Path: opts.Path, Exit: opts.Exit}, &shim.Empty{})
}

func (r *Runtime) Update(ctx context.Context, id string, resources *specs.LinuxResources, _ map[string]string) error {
	if resources == nil {
		_, err := r.get(id)
		return err
	}
	b, err := json.Marshal(resources)
	if err != nil {
		return fmt.Errorf("resources: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return r.call(ctx, id, "Update", shim.UpdateRequest{Resources: b}, &shim.Empty{})
}

// Stats reads the task's cgroup here, not in its shim (see stats.go).
func (r *Runtime) Stats(ctx context.Context, id string) (keelruntime.Stats, error) {
	t, err := r.get(id)
	if err != nil {
		return keelruntime.Stats{}, err
	}
	if t.dead() {
		return keelruntime.Stats{}, fmt.Errorf("task %q: %s: %w", t.id, t.deadReason, errdefs.ErrFailedPrecondition)
	}
	return cgroupStats(t.cfg.CgroupPath)
}

// Wait waits for a process's exit. A shim that dies meanwhile ends the
// wait with the exit its death left (see shimDied): never a hang; one that
// does not answer is waited for.
func (r *Runtime) Wait(ctx context.Context, id, execID string) (keelruntime.ExitStatus, error) {
	t, err := r.get(id)
	if err != nil {
		return keelruntime.ExitStatus{}, err
	}
	for !t.dead() {
		if c, unknown := t.conn(); unknown == "" && c != nil {
			var reply shim.ExitReply
			err := c.Call(ctx, "Wait", shim.ProcessRequest{ExecID: execID}, &reply)
			if err == nil || !errors.Is(err, shimclient.ErrConnection) {
				return keelruntime.ExitStatus(reply.Exit), err
			}
			t.callFailed(c, "wait", err, false)
		}
		select {
		case <-t.gone:
		case <-t.waitAnswer():
		case <-ctx.Done():
			return keelruntime.ExitStatus{}, ctx.Err()
		case <-r.ctx.Done():
			return keelruntime.ExitStatus{}, fmt.Errorf("task %q: runtime closed: %w", id, errdefs.ErrUnavailable)
		}
	}
	return t.deadExit, nil
}

func (r *Runtime) State(ctx context.Context, id, execID string) (keelruntime.TaskState, error) {
	t, err := r.get(id)
	if err != nil {
		return keelruntime.TaskState{}, err
	}
	return r.taskState(ctx, t, execID)
}

// taskState asks t's shim, within stateTimeout; a shim that does not
// answer makes the state unknown, with the reason.
func (r *Runtime) taskState(ctx context.Context, t *task, execID string) (keelruntime.TaskState, error) {
	c, unknown := t.conn()
	if !t.dead() && unknown == "" && c != nil {
		var reply shim.StateReply
		sctx, cancel := context.WithTimeout(ctx, stateTimeout)
		err := c.Call(sctx, "State", shim.ProcessRequest{ExecID: execID}, &reply)
		timedOut := sctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil || !(errors.Is(err, shimclient.ErrConnection) || timedOut) {
			return taskState(reply.State), err
		}
		if timedOut {
			// Said for this answer only: the poller decides for the task.
			unknown = fmt.Sprintf("%s not answering: no reply to state in %s", t.proc, stateTimeout)
		} else {
			t.callFailed(c, "state", err, false)
			_, unknown = t.conn()
		}
	}
	if t.dead() {
		if execID != "" {
			return keelruntime.TaskState{}, fmt.Errorf("exec %q in task %q: %w", execID, t.id, errdefs.ErrNotFound)
		}
		return keelruntime.TaskState{
			ID: t.id, Pid: t.deadExit.Pid, Status: keelruntime.StatusStopped, IO: keelruntime.IO(t.cfg.IO),
			ExitStatus: t.deadExit.Status, ExitedAt: t.deadExit.ExitedAt, Reason: t.deadReason,
		}, nil
	}
	st := keelruntime.TaskState{ID: t.id, ExecID: execID, Status: keelruntime.StatusUnknown, Reason: unknown}
	if execID == "" {
		st.Pid, st.IO = t.pid.Load(), keelruntime.IO(t.cfg.IO)
	}
	return st, nil
}

// taskState is a shim's answer as sdk/runtime has it.
func taskState(st shim.TaskState) keelruntime.TaskState {
	return keelruntime.TaskState{
		ID: st.ID, ExecID: st.ExecID, Pid: st.Pid, Status: keelruntime.Status(st.Status), IO: keelruntime.IO(st.IO),
		ExitStatus: st.ExitStatus, ExitedAt: st.ExitedAt, Reason: st.Reason,
	}
}

// List reports every task, dead shims' included, ordered by id.
func (r *Runtime) List(ctx context.Context) ([]keelruntime.TaskState, error) {
	r.mu.Lock()
	var tasks []*task
	for _, t := range r.tasks {
		if t.listed.Load() {
			tasks = append(tasks, t)
		}
	}
	r.mu.Unlock()
	states := make([]keelruntime.TaskState, len(tasks))
	var g errgroup.Group
	g.SetLimit(32)
	for i, t := range tasks {
		g.Go(func() error {
			st, err := r.taskState(ctx, t, "")
			if err != nil {
				st = keelruntime.TaskState{ID: t.id, Status: keelruntime.StatusUnknown, Reason: err.Error()}
			}
			states[i] = st
			return nil
		})
	}
	g.Wait()
	slices.SortFunc(states, func(a, b keelruntime.TaskState) int { return strings.Compare(a.ID, b.ID) })
	return states, nil
}

func (r *Runtime) Events(ctx context.Context) (<-chan keelruntime.Event, <-chan error) {
	return r.broker.subscribe(ctx)
}

// Close stops the event pollers and closes the shim connections; the
// tasks and their shims keep running.
func (r *Runtime) Close() error {
	r.cancel()
	r.mu.Lock()
	for _, t := range r.tasks {
		if c, _ := t.conn(); c != nil {
			c.Close()
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.broker.close()
	if r.shimExe != nil {
		r.shimExe.Close()
	}
	return nil
}
