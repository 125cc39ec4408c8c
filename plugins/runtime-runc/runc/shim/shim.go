// Package shim is the per-task shim of keel-runtime-runc, run as
// `keel-runtime-runc-shim DIR` (cmd/keel-runtime-runc-shim; or, with no
// such executable beside the plugin's, `keel-runtime-runc shim DIR`),
// detached in its own session. It links no gRPC, no protobuf and no sdk
// package but sdk/crilog (the standard library's alone), so that each
// shim stays small.
// It is a child subreaper that runs the OCI runtime (runc create, start,
// exec), owns the container's stdio, reaps the container and its exec'd
// processes, writes the init process's exit durably to DIR/exit.json, and
// serves the plugin over DIR's unix socket (net/rpc). Events are kept, in
// order, until the plugin acknowledges them, so a restarted plugin misses
// none.
package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	errdefs "github.com/containerd/errdefs"
	gorunc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Executable is the shim's own executable, installed beside the plugin's:
// run as `keel-runtime-runc-shim DIR`.
const Executable = "keel-runtime-runc-shim"

// Arg, as the plugin executable's first argument, runs it as a shim:
// `keel-runtime-runc shim DIR`, what the plugin runs when no Executable
// is beside it, and what plugins before Executable ran.
const Arg = "shim"

// Files in a task's directory.
const (
	ConfigFile = "task.json"
	ExitFile   = "exit.json"
	PidFile    = "shim.pid"
	InitPid    = "init.pid"
	LogFile    = "runtime-log.json"
	BundleDir  = "bundle"
)

// readyFD is the pipe the shim reports its start on: one JSON Ready line.
const readyFD = 3

// Ready is the shim's first and only word on its ready pipe.
type Ready struct {
	Pid   uint32 `json:"pid,omitempty"`
	Code  int    `json:"code,omitempty"` // gRPC code of Error
	Error string `json:"error,omitempty"`
}

// process is the init process (exec id "") or an exec'd one.
type process struct {
	execID string
	spec   *specs.Process // exec'd processes
	io     *procIO
	pid    int
	status Status
	// starting holds back an exit reaped while Start is still to report
	// the start, so the start event always comes first.
	starting    bool
	pendingExit *gorunc.Exit
	exit        ExitStatus
	exited      chan struct{}
}

// Service is the shim's RPC service.
type Service struct {
	cfg    Config
	dir    string
	rt     *gorunc.Runc
	reaper *reaper

	mu      sync.Mutex
	procs   map[string]*process
	orphans map[int]gorunc.Exit // reaped, not yet matched to a process
	paused  bool
	deleted bool

	evMu   sync.Mutex
	events []SeqEvent
	seq    uint64
	ack    uint64
	notify chan struct{}

	done     chan struct{}
	doneOnce sync.Once

	rpc *rpcServer
}

// Main runs the shim for the task directory args[0] and returns the exit
// code.
func Main(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: shim TASK-DIR")
		return 2
	}
	// GOMAXPROCS is the plugin's setting for the shim alone (read at
	// startup); runc, which inherits the environment, keeps its default.
	os.Unsetenv("GOMAXPROCS")
	ready := os.NewFile(readyFD, "ready")
	s, err := start(args[0])
	if err != nil {
		if ready != nil {
			json.NewEncoder(ready).Encode(Ready{Code: errCode(err), Error: err.Error()})
		}
		return 1
	}
	pid := s.procs[""].pid
	if ready != nil {
		json.NewEncoder(ready).Encode(Ready{Pid: uint32(pid)})
		ready.Close()
	}
	<-s.done
	// Exit once the reply to Shutdown (and to every other call answered
	// at the end) is written.
	s.rpc.drain()
	return 0
}

func start(dir string) (*Service, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become a subreaper: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigFile, err)
	}
	r := newReaper()
	gorunc.Monitor = r
	s := &Service{
		cfg:     cfg,
		dir:     dir,
		reaper:  r,
		procs:   map[string]*process{},
		orphans: map[int]gorunc.Exit{},
		notify:  make(chan struct{}),
		done:    make(chan struct{}),
		rt: &gorunc.Runc{
			Command:   cfg.Runtime,
			Root:      cfg.RuntimeRoot,
			Log:       filepath.Join(dir, LogFile),
			LogFormat: gorunc.JSON,
		},
	}
	r.setOnExit(s.onExit)
	os.WriteFile(filepath.Join(dir, PidFile), []byte(strconv.Itoa(os.Getpid())), 0o600)
	if err := writeProcess(dir); err != nil {
		return nil, fmt.Errorf("record the shim process: %w", err)
	}

	os.Remove(cfg.Socket)
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	if err := s.create(); err != nil {
		lis.Close()
		os.Remove(cfg.Socket)
		return nil, err
	}
	s.rpc = serve(lis, s.methods())
	go s.watchOOM()
	return s, nil
}

// create creates the container on the rootfs the plugin mounted (a
// restore waits for Start).
func (s *Service) create() (err error) {
	pio, err := newProcIO(s.cfg.IO)
	if err != nil {
		return fmt.Errorf("open stdio: %w", err)
	}
	p := &process{io: pio, status: StatusCreated, exited: make(chan struct{})}
	if s.cfg.Checkpoint == "" {
		err := s.rt.Create(context.Background(), s.cfg.ID, s.cfg.Bundle, &gorunc.CreateOpts{
			PidFile:       filepath.Join(s.dir, InitPid),
			IO:            pio,
			ConsoleSocket: pio.consoleSocket(),
		})
		if err != nil {
			pio.Close()
			return s.runtimeError("create", err)
		}
		if err := pio.startConsole(); err != nil {
			s.rt.Delete(context.Background(), s.cfg.ID, &gorunc.DeleteOpts{Force: true})
			pio.Close()
			return fmt.Errorf("console: %w", err)
		}
		if p.pid, err = readPid(filepath.Join(s.dir, InitPid)); err != nil {
			s.rt.Delete(context.Background(), s.cfg.ID, &gorunc.DeleteOpts{Force: true})
			pio.Close()
			return err
		}
	}
	s.mu.Lock()
	s.procs[""] = p
	s.publish(Event{Topic: TopicCreate, ID: s.cfg.ID, Pid: uint32(p.pid)})
	s.claimLocked(p)
	s.mu.Unlock()
	return nil
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// runtimeError adds the runtime's last logged error to err.
func (s *Service) runtimeError(op string, err error) error {
	msg := lastRuntimeError(filepath.Join(s.dir, LogFile))
	if msg == "" {
		msg = err.Error()
	}
	var class error = errdefs.ErrUnknown
	switch {
	case strings.Contains(msg, "does not exist"), strings.Contains(msg, "not found"), strings.Contains(msg, "no such"):
		class = errdefs.ErrNotFound
	case strings.Contains(msg, "not running"), strings.Contains(msg, "not paused"), strings.Contains(msg, "is paused"):
		class = errdefs.ErrFailedPrecondition
	case strings.Contains(msg, "invalid"), strings.Contains(msg, "permission denied"), strings.Contains(msg, "operation not permitted"):
		class = errdefs.ErrInvalidArgument
	}
	return fmt.Errorf("%s %s: %s: %w", s.cfg.Runtime, op, msg, class)
}

// lastRuntimeError is the last error line of the runtime's JSON log.
func lastRuntimeError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var last string
	for _, line := range strings.Split(string(b), "\n") {
		var l struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &l) == nil && (l.Level == "error" || l.Level == "fatal") {
			last = l.Msg
		}
	}
	return last
}

// onExit matches a reaped process to the task's processes.
func (s *Service) onExit(e gorunc.Exit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.pid == e.Pid && p.status != StatusStopped {
			s.exitedLocked(p, e)
			return
		}
	}
	s.orphans[e.Pid] = e
}

// claimLocked takes an exit reaped before p's pid was known.
func (s *Service) claimLocked(p *process) {
	if p.pid == 0 {
		return
	}
	if e, ok := s.orphans[p.pid]; ok {
		delete(s.orphans, p.pid)
		s.exitedLocked(p, e)
	}
}

// exitedLocked records p's exit. The init process's exit is reported once
// the exec'd ones have reported theirs (they die with it in its pid
// namespace), after its output is written and its status is on disk.
func (s *Service) exitedLocked(p *process, e gorunc.Exit) {
	if p.starting {
		p.pendingExit = &e
		return
	}
	p.status = StatusStopped
	p.exit = ExitStatus{Pid: uint32(e.Pid), Status: uint32(e.Status), ExitedAt: e.Timestamp}
	var execs []*process
	if p.execID == "" {
		s.paused = false
		for _, x := range s.procs {
			if x.execID != "" && x.pid != 0 && x.status == StatusRunning {
				execs = append(execs, x)
			}
		}
	}
	go func() {
		for _, x := range execs {
			select {
			case <-x.exited:
			case <-time.After(time.Second):
			}
		}
		p.io.waitOutput(2 * time.Second)
		if p.execID == "" {
			writeFileSync(filepath.Join(s.dir, ExitFile), p.exit)
		}
		s.mu.Lock()
		s.publish(Event{Topic: TopicExit, ID: s.cfg.ID, ExecID: p.execID,
			Pid: p.exit.Pid, ExitStatus: p.exit.Status, ExitedAt: p.exit.ExitedAt})
		close(p.exited)
		s.mu.Unlock()
		p.io.Close()
	}()
}

// writeFileSync writes v as JSON so that it survives a crash: a temporary
// file synced, renamed over the target, and the directory synced.
func writeFileSync(path string, v any) error { return writeFileAtomic(path, v, true) }

// writeFileAtomic writes v as JSON through a temporary file renamed over
// the target, so a reader finds the old content or the new, whole; with
// durable, the file and the directory are synced too, so that it survives
// the machine's crash.
func writeFileAtomic(path string, v any, durable bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// publish appends an event; callers hold s.mu, which orders events as the
// transitions they report.
func (s *Service) publish(ev Event) {
	ev.Timestamp = time.Now()
	s.evMu.Lock()
	s.seq++
	s.events = append(s.events, SeqEvent{Seq: s.seq, Event: ev})
	close(s.notify)
	s.notify = make(chan struct{})
	s.evMu.Unlock()
}

func (s *Service) proc(execID string) (*process, error) {
	p, ok := s.procs[execID]
	if !ok || (execID == "" && s.deleted) {
		if execID == "" {
			return nil, fmt.Errorf("task %q: %w", s.cfg.ID, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("exec %q in task %q: %w", execID, s.cfg.ID, errdefs.ErrNotFound)
	}
	return p, nil
}

// Start starts the init process (restoring it from a checkpoint when
// asked) or an exec'd one.
func (s *Service) Start(req ProcessRequest, reply *PidReply) error {
	s.mu.Lock()
	p, err := s.proc(req.ExecID)
	if err == nil && (p.status != StatusCreated || p.starting) {
		err = fmt.Errorf("process %q of task %q is %s: %w", req.ExecID, s.cfg.ID, p.status, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		s.mu.Unlock()
		return wireError(err)
	}
	p.starting = true
	s.mu.Unlock()

	err = s.startProcess(p)

	s.mu.Lock()
	defer s.mu.Unlock()
	p.starting = false
	if err != nil {
		if p.pendingExit != nil {
			s.exitedLocked(p, *p.pendingExit)
		}
		return wireError(err)
	}
	p.status = StatusRunning
	topic := TopicStart
	if p.execID != "" {
		topic = TopicExecStarted
	}
	s.publish(Event{Topic: topic, ID: s.cfg.ID, ExecID: p.execID, Pid: uint32(p.pid)})
	if p.pendingExit != nil {
		s.exitedLocked(p, *p.pendingExit)
	} else {
		s.claimLocked(p)
	}
	reply.Pid = uint32(p.pid)
	return nil
}

func (s *Service) startProcess(p *process) error {
	ctx := context.Background()
	switch {
	case p.execID != "":
		pidFile := filepath.Join(s.dir, "exec-"+p.execID+".pid")
		defer os.Remove(pidFile)
		err := s.rt.Exec(ctx, s.cfg.ID, *p.spec, &gorunc.ExecOpts{
			PidFile: pidFile, IO: p.io, ConsoleSocket: p.io.consoleSocket(), Detach: true,
		})
		if err != nil {
			return s.runtimeError("exec", err)
		}
		if err := p.io.startConsole(); err != nil {
			return fmt.Errorf("console: %w", err)
		}
		pid, err := readPid(pidFile)
		if err != nil {
			return err
		}
		s.setPid(p, pid)
	case s.cfg.Checkpoint != "":
		pidFile := filepath.Join(s.dir, InitPid)
		_, err := s.rt.Restore(ctx, s.cfg.ID, s.cfg.Bundle, &gorunc.RestoreOpts{
			CheckpointOpts: gorunc.CheckpointOpts{ImagePath: s.cfg.Checkpoint, WorkDir: filepath.Join(s.dir, "criu-work")},
			IO:             p.io, ConsoleSocket: p.io.consoleSocket(), Detach: true, PidFile: pidFile,
		})
		if err != nil {
			return s.runtimeError("restore", err)
		}
		if err := p.io.startConsole(); err != nil {
			return fmt.Errorf("console: %w", err)
		}
		pid, err := readPid(pidFile)
		if err != nil {
			return err
		}
		s.setPid(p, pid)
	default:
		if err := s.rt.Start(ctx, s.cfg.ID); err != nil {
			return s.runtimeError("start", err)
		}
	}
	return nil
}

func (s *Service) setPid(p *process, pid int) {
	s.mu.Lock()
	p.pid = pid
	s.mu.Unlock()
}

// Exec adds a process, not yet started.
func (s *Service) Exec(req ExecRequest, _ *Empty) error {
	var spec specs.Process
	if err := decodeJSON("process spec", req.Spec, &spec); err != nil {
		return wireError(err)
	}
	if req.ExecID == "" || strings.ContainsAny(req.ExecID, "/\x00") {
		return wireError(fmt.Errorf("exec id %q: %w", req.ExecID, errdefs.ErrInvalidArgument))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	init, err := s.proc("")
	if err != nil {
		return wireError(err)
	}
	if init.status != StatusRunning {
		return wireError(fmt.Errorf("task %q is %s: %w", s.cfg.ID, init.status, errdefs.ErrFailedPrecondition))
	}
	if _, ok := s.procs[req.ExecID]; ok {
		return wireError(fmt.Errorf("exec %q in task %q: %w", req.ExecID, s.cfg.ID, errdefs.ErrAlreadyExists))
	}
	spec.Terminal = req.IO.Terminal
	pio, err := newProcIO(req.IO)
	if err != nil {
		return wireError(fmt.Errorf("open stdio: %w", err))
	}
	s.procs[req.ExecID] = &process{execID: req.ExecID, spec: &spec, io: pio,
		status: StatusCreated, exited: make(chan struct{})}
	s.publish(Event{Topic: TopicExecAdded, ID: s.cfg.ID, ExecID: req.ExecID})
	return nil
}

// Kill signals a process, or with All every process of the task.
func (s *Service) Kill(req KillRequest, _ *Empty) error {
	s.mu.Lock()
	p, err := s.proc(req.ExecID)
	if err == nil && p.status == StatusStopped && !req.All {
		err = fmt.Errorf("process %q of task %q: already exited: %w", req.ExecID, s.cfg.ID, errdefs.ErrNotFound)
	}
	if err == nil && req.ExecID != "" && p.pid == 0 {
		err = fmt.Errorf("exec %q of task %q is not started: %w", req.ExecID, s.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	if req.ExecID != "" {
		if err := unix.Kill(p.pid, syscall.Signal(req.Signal)); err != nil {
			return wireError(fmt.Errorf("signal exec %q: %v: %w", req.ExecID, err, errdefs.ErrNotFound))
		}
		return nil
	}
	if err := s.rt.Kill(context.Background(), s.cfg.ID, req.Signal, &gorunc.KillOpts{All: req.All}); err != nil {
		if req.All && p.status == StatusStopped {
			return nil
		}
		return wireError(s.runtimeError("kill", err))
	}
	return nil
}

// Delete removes a stopped process; for the init process, the container,
// its cgroup and rootfs mounts.
func (s *Service) Delete(req ProcessRequest, reply *ExitReply) error {
	s.mu.Lock()
	p, err := s.proc(req.ExecID)
	if err == nil && (p.status == StatusRunning || p.starting) {
		err = fmt.Errorf("process %q of task %q is running: %w", req.ExecID, s.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	if req.ExecID != "" {
		s.mu.Lock()
		delete(s.procs, req.ExecID)
		s.mu.Unlock()
		p.io.Close()
		reply.Exit = p.exit
		return nil
	}
	if p.status == StatusCreated && p.pid != 0 {
		// Never started: the force kills the waiting init.
		if err := s.rt.Delete(context.Background(), s.cfg.ID, &gorunc.DeleteOpts{Force: true}); err != nil {
			return wireError(s.runtimeError("delete", err))
		}
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
		}
	} else if p.pid != 0 {
		if err := s.rt.Delete(context.Background(), s.cfg.ID, &gorunc.DeleteOpts{}); err != nil {
			// Already gone is fine.
			if _, serr := s.rt.State(context.Background(), s.cfg.ID); serr == nil {
				return wireError(s.runtimeError("delete", err))
			}
		}
	}
	// The rootfs the plugin mounted, if any (nothing mounted there is
	// no error).
	if err := UnmountAll(filepath.Join(s.cfg.Bundle, "rootfs")); err != nil {
		return wireError(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.status != StatusStopped {
		// The exit did not come (a created task that never ran): record it.
		p.status = StatusStopped
		p.exit = ExitStatus{Pid: uint32(p.pid), Status: 255, ExitedAt: time.Now()}
		writeFileSync(filepath.Join(s.dir, ExitFile), p.exit)
		close(p.exited)
	}
	s.deleted = true
	s.publish(Event{Topic: TopicDelete, ID: s.cfg.ID, Pid: p.exit.Pid,
		ExitStatus: p.exit.Status, ExitedAt: p.exit.ExitedAt})
	reply.Exit = p.exit
	return nil
}

// unmountAll unmounts everything stacked on target.
func UnmountAll(target string) error {
	for range 16 {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			if err == unix.EINVAL || err == unix.ENOENT {
				return nil
			}
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return nil
}

// ResizePty resizes a process's console.
func (s *Service) ResizePty(req ResizeRequest, _ *Empty) error {
	s.mu.Lock()
	p, err := s.proc(req.ExecID)
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	if !p.io.paths.Terminal {
		return wireError(fmt.Errorf("process %q of task %q has no terminal: %w", req.ExecID, s.cfg.ID, errdefs.ErrFailedPrecondition))
	}
	if err := p.io.resize(req.Width, req.Height); err != nil {
		return wireError(fmt.Errorf("resize: %v: %w", err, errdefs.ErrFailedPrecondition))
	}
	return nil
}

// CloseIO closes a process's stdin.
func (s *Service) CloseIO(req ProcessRequest, _ *Empty) error {
	s.mu.Lock()
	p, err := s.proc(req.ExecID)
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	p.io.closeStdin()
	return nil
}

// Pause freezes the task.
func (s *Service) Pause(_ Empty, _ *Empty) error { return s.freeze(true) }

// Resume thaws the task.
func (s *Service) Resume(_ Empty, _ *Empty) error { return s.freeze(false) }

func (s *Service) freeze(pause bool) error {
	s.mu.Lock()
	p, err := s.proc("")
	if err == nil && (p.status != StatusRunning || s.paused == pause) {
		err = fmt.Errorf("task %q is %s: %w", s.cfg.ID, s.statusLocked(p), errdefs.ErrFailedPrecondition)
	}
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	op, f, topic := "pause", s.rt.Pause, TopicPaused
	if !pause {
		op, f, topic = "resume", s.rt.Resume, TopicResumed
	}
	if err := f(context.Background(), s.cfg.ID); err != nil {
		return wireError(s.runtimeError(op, err))
	}
	s.mu.Lock()
	s.paused = pause
	s.publish(Event{Topic: topic, ID: s.cfg.ID})
	s.mu.Unlock()
	return nil
}

func (s *Service) statusLocked(p *process) Status {
	if p.execID == "" && s.paused && p.status == StatusRunning {
		return StatusPaused
	}
	return p.status
}

// Pids lists the task's processes, naming the exec'd ones.
func (s *Service) Pids(_ Empty, reply *PidsReply) error {
	s.mu.Lock()
	_, err := s.proc("")
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	pids, err := s.rt.Ps(context.Background(), s.cfg.ID)
	if err != nil {
		return wireError(s.runtimeError("ps", err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pid := range pids {
		info := ProcessInfo{Pid: uint32(pid)}
		for _, p := range s.procs {
			if p.pid == pid && p.execID != "" {
				info.ExecID = p.execID
			}
		}
		reply.Processes = append(reply.Processes, info)
	}
	return nil
}

// Checkpoint writes the task's CRIU image to req.Path.
func (s *Service) Checkpoint(req CheckpointRequest, _ *Empty) error {
	s.mu.Lock()
	p, err := s.proc("")
	if err == nil && p.status != StatusRunning {
		err = fmt.Errorf("task %q is %s: %w", s.cfg.ID, p.status, errdefs.ErrFailedPrecondition)
	}
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	work := req.WorkPath
	if work == "" {
		work = filepath.Join(s.dir, "criu-work")
	}
	var actions []gorunc.CheckpointAction
	if !req.Exit {
		actions = append(actions, gorunc.LeaveRunning)
	}
	err = s.rt.Checkpoint(context.Background(), s.cfg.ID, &gorunc.CheckpointOpts{
		ImagePath: req.Path, WorkDir: work, AllowOpenTCP: true, AllowExternalUnixSockets: true,
		AllowTerminal: p.io.paths.Terminal, FileLocks: true,
	}, actions...)
	if err != nil {
		msg := s.runtimeError("checkpoint", err).Error()
		if crlog, rerr := os.ReadFile(filepath.Join(work, "dump.log")); rerr == nil {
			msg += "; criu: " + criuErrors(string(crlog))
		}
		return wireError(fmt.Errorf("%s: %w", msg, errdefs.ErrUnknown))
	}
	return nil
}

// criuErrors picks the error lines of a CRIU log (its last lines
// otherwise).
func criuErrors(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	var errs []string
	for _, l := range lines {
		if strings.Contains(l, "Error (") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) == 0 {
		errs = lines
	}
	if len(errs) > 3 {
		errs = errs[len(errs)-3:]
	}
	return strings.Join(errs, " | ")
}

// Update changes the task's resources.
func (s *Service) Update(req UpdateRequest, _ *Empty) error {
	var res specs.LinuxResources
	if err := decodeJSON("resources", req.Resources, &res); err != nil {
		return wireError(err)
	}
	s.mu.Lock()
	p, err := s.proc("")
	if err == nil && p.status == StatusStopped {
		err = fmt.Errorf("task %q is stopped: %w", s.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	if err := s.rt.Update(context.Background(), s.cfg.ID, &res); err != nil {
		return wireError(s.runtimeError("update", err))
	}
	return nil
}

// Wait blocks until the process exits.
func (s *Service) Wait(req ProcessRequest, reply *ExitReply) error {
	s.mu.Lock()
	p, ok := s.procs[req.ExecID]
	s.mu.Unlock()
	if !ok {
		_, err := s.proc(req.ExecID)
		return wireError(err)
	}
	select {
	case <-p.exited:
	case <-s.done:
		return wireError(fmt.Errorf("shim shutting down: %w", errdefs.ErrUnavailable))
	}
	s.mu.Lock()
	reply.Exit = p.exit
	s.mu.Unlock()
	return nil
}

// State reports a process.
func (s *Service) State(req ProcessRequest, reply *StateReply) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.proc(req.ExecID)
	if err != nil {
		return wireError(err)
	}
	reply.State = TaskState{
		ID: s.cfg.ID, ExecID: p.execID, Pid: uint32(p.pid), Status: s.statusLocked(p), IO: p.io.paths,
		ExitStatus: p.exit.Status, ExitedAt: p.exit.ExitedAt,
	}
	return nil
}

// Events returns the events after req.After (0: after the last
// acknowledged), waiting up to req.Timeout for one. Asking after N
// acknowledges every event up to N.
func (s *Service) Events(req EventsRequest, reply *EventsReply) error {
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.evMu.Lock()
		after := req.After
		if after == 0 {
			after = s.ack
		} else if after > s.ack {
			s.ack = after
			i := 0
			for i < len(s.events) && s.events[i].Seq <= after {
				i++
			}
			s.events = append([]SeqEvent(nil), s.events[i:]...)
		}
		for _, ev := range s.events {
			if ev.Seq > after {
				reply.Events = append(reply.Events, ev)
			}
		}
		notify := s.notify
		s.evMu.Unlock()
		if len(reply.Events) > 0 {
			return nil
		}
		select {
		case <-notify:
		case <-timer.C:
			return nil
		case <-s.done:
			return nil
		}
	}
}

// Shutdown ends the shim once its task is deleted.
func (s *Service) Shutdown(_ Empty, _ *Empty) error {
	s.mu.Lock()
	deleted := s.deleted
	s.mu.Unlock()
	if !deleted {
		return wireError(fmt.Errorf("task %q is not deleted: %w", s.cfg.ID, errdefs.ErrFailedPrecondition))
	}
	s.doneOnce.Do(func() {
		os.Remove(s.cfg.Socket)
		close(s.done)
	})
	return nil
}
