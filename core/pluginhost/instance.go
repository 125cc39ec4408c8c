package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
)

// instance is one configured plugin and its supervisor.
type instance struct {
	h      *Host
	spec   Spec
	id     string
	logger hclog.Logger

	quit     chan struct{} // closed by stop
	quitOnce sync.Once
	quitCtx  context.Context // cancelled with quit: bounds launches
	cancel   context.CancelFunc
	done     chan struct{} // closed when nothing of the instance runs any more
	doneOnce sync.Once

	mu       sync.Mutex
	proc     *host.Process // nil while down
	state    string
	restarts int
	lastErr  string
	info     host.Info

	// procCtx lives as long as proc serves: cancelled when it is stopped
	// for idleness, which ends the passive calls to it.
	procCtx    context.Context
	procCancel context.CancelFunc
	// running is closed, and replaced, each time a process starts
	// serving: passive calls wait on it.
	running chan struct{}
	// inflight counts the calls (and open streams) that hold the plugin
	// running; lastUse is when the last one ended.
	inflight int
	lastUse  time.Time
	// idle: the plugin is stopped for idleness, or not started yet (lazy);
	// the next call starts it (starting, wake).
	idle     bool
	starting *startAttempt
	wake     chan struct{}

	// reconf is what Reconfigure changed (reconfigure.go).
	reconf reconfState
}

func newInstance(h *Host, s Spec) *instance {
	ctx, cancel := context.WithCancel(context.Background())
	return &instance{
		h:       h,
		spec:    s,
		id:      s.ID(),
		logger:  h.logger.With("plugin", s.ID()),
		quit:    make(chan struct{}),
		quitCtx: ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		state:   StateStarting,
		running: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		reconf:  newReconfState(s.Config),
	}
}

// launch starts a process and configures it.
func (in *instance) launch(ctx context.Context) (*host.Process, error) {
	ctx, cancel := context.WithTimeout(ctx, in.h.opts.startTimeout)
	defer cancel()
	p, err := host.Launch(ctx, host.LaunchConfig{
		Path:         in.spec.Path,
		SHA256:       in.spec.SHA256,
		Env:          in.spec.Env,
		Kind:         in.spec.Kind,
		Instance:     in.id,
		Logger:       in.h.base,
		StartTimeout: in.h.opts.startTimeout,
		SocketDir:    in.h.opts.socketDir,
		DialOptions:  in.dialOptions(),
	})
	if err != nil {
		var le *host.LaunchError
		if errors.As(err, &le) {
			return nil, &StartError{Kind: in.spec.Kind, Name: in.spec.Name, Setting: le.Setting, Err: err}
		}
		return nil, err
	}
	if _, err := p.Configure(ctx, in.spec.Root, in.spec.State, in.launchConfig()); err != nil {
		p.Kill()
		if errdefs.IsInvalidArgument(err) {
			key, _ := sdk.ConfigKeyOf(err)
			return nil, &StartError{Kind: in.spec.Kind, Name: in.spec.Name, Setting: "config", Key: key, Err: err}
		}
		return nil, err
	}
	return p, nil
}

// start launches the first process and hands it to a supervisor; a lazy
// plugin's supervisor waits for its first call instead.
func (in *instance) start(ctx context.Context) error {
	if in.spec.Lazy {
		in.mu.Lock()
		in.idle, in.state = true, StateIdle
		in.mu.Unlock()
		in.logger.Info("plugin starts on its first call", "path", in.spec.Path)
		go in.supervise(nil)
		return nil
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // stop aborts a launch in progress
		select {
		case <-in.quit:
			stop()
		case <-ctx.Done():
		}
	}()
	p, err := in.launch(ctx)
	in.mu.Lock()
	defer in.mu.Unlock()
	if err != nil {
		in.state, in.lastErr = StateFailed, err.Error()
		in.finish()
		return err
	}
	select {
	case <-in.quit:
		in.state = StateStopped
		p.Kill()
		in.finish()
		return fmt.Errorf("%s: stopped while starting", in.id)
	default:
	}
	in.setRunning(p)
	in.logger.Info("plugin started", "pid", p.Pid(), "version", in.info.Version, "path", in.spec.Path)
	in.send(in.event(EventStarted, p.Pid())) // before the supervisor can see an exit
	go in.supervise(p)
	return nil
}

// setRunning records a configured process; in.mu is held.
func (in *instance) setRunning(p *host.Process) {
	in.proc, in.state, in.info = p, StateRunning, p.Info()
	in.idle, in.lastUse = false, time.Now()
	in.procCtx, in.procCancel = context.WithCancel(context.Background())
	in.settleReconfigure(nil) // it was launched with the latest config
	close(in.running)
	in.running = make(chan struct{})
}

func (in *instance) finish() { in.doneOnce.Do(func() { close(in.done) }) }

// supervise watches p and restarts the plugin whenever it goes down, until
// stop. A plugin unused for its idle stop is stopped gracefully, which is
// no failure and no restart, and started again by the next call (p is nil
// while it is stopped so).
func (in *instance) supervise(p *host.Process) {
	defer in.finish()
	defer in.endStarts()
	o := in.h.opts
	backoff := o.backoffMin
	for {
		if p == nil {
			if p = in.startOnCall(); p == nil {
				in.setState(StateStopped)
				return
			}
		}
		upSince := time.Now()
		why := in.watch(p)
		in.mu.Lock()
		if in.proc == p {
			in.proc = nil
		}
		in.procCancel() // p's: no other process ran since
		switch why {
		case watchQuit:
			in.state = StateStopped
		case watchExited:
			in.state = StateRestarting
		}
		in.mu.Unlock()
		p.Kill() // graceful on stop; after an exit it releases the client
		if why == watchExited {
			in.emit(EventExited, p.Pid())
		}
		switch why {
		case watchQuit:
			in.logger.Info("plugin stopped")
			return
		case watchIdle:
			in.logger.Info("plugin stopped: idle", "pid", p.Pid(), "idle_stop", in.spec.IdleStop)
			p = nil
			continue
		case watchReconfigure:
			if p = in.relaunch(); p != nil {
				continue
			}
			// Neither config started: restarted with backoff as after
			// a crash.
		}
		if time.Since(upSince) >= o.stableAfter {
			backoff = o.backoffMin
		}
		for {
			select {
			case <-in.quit:
				in.setState(StateStopped)
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, o.backoffMax)
			in.mu.Lock()
			in.restarts++
			in.mu.Unlock()
			np, err := in.launch(in.quitCtx)
			if err != nil {
				in.mu.Lock()
				in.state, in.lastErr = StateFailed, err.Error()
				in.mu.Unlock()
				select {
				case <-in.quit:
					in.setState(StateStopped)
					return
				default:
				}
				in.logger.Error("plugin restart failed", "error", err, "retry_in", backoff)
				continue
			}
			in.mu.Lock()
			select {
			case <-in.quit:
				in.state = StateStopped
				in.mu.Unlock()
				np.Kill()
				return
			default:
			}
			in.setRunning(np)
			restarts := in.restarts
			in.mu.Unlock()
			in.logger.Info("plugin restarted", "pid", np.Pid(), "restarts", restarts)
			in.emit(EventRestarted, np.Pid())
			p = np
			break
		}
	}
}

// endStarts fails a start a call still waits for once the supervisor ends,
// and wakes the passive calls waiting for a process: none will run.
func (in *instance) endStarts() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.idle = false
	close(in.running)
	in.running = make(chan struct{})
	if a := in.starting; a != nil {
		a.err = unavailable(in.id, "plugin is stopped")
		close(a.done)
		in.starting = nil
	}
}

// Why watch returned.
const (
	watchExited      = iota // the process exited (or was killed as hung)
	watchQuit               // stop was asked
	watchIdle               // unused for its idle stop: taken out of service
	watchReconfigure        // its config changed: taken out of service (reconfigure.go)
)

// watch returns when p has exited, stop was asked, or p went unused for
// the idle stop (and is taken out of service: beginIdleStop). It
// pings p, one ping at a time, each given as long as it takes: a plugin
// that answered no ping for healthTimeout is unresponsive, an answer makes
// it running again. Only a process that could run and answered nothing for
// hangTimeout is killed (see the package doc).
func (in *instance) watch(p *host.Process) int {
	o := in.h.opts
	tick := time.NewTicker(o.healthInterval)
	defer tick.Stop()
	// idle fires when the plugin may have gone unused for its idle stop.
	var idle <-chan time.Time
	var idleTimer *time.Timer
	if d := in.spec.IdleStop; d > 0 {
		idleTimer = time.NewTimer(d)
		defer idleTimer.Stop()
		idle = idleTimer.C
	}
	var (
		ping    chan error // the ping in flight, if any
		pingErr error      // how the last ping failed
		// waiting is when the plugin was first asked since its last
		// answer (zero: it answered), or the last time its process was
		// seen held, whichever is later.
		waiting time.Time
	)
	for {
		select {
		case <-in.quit:
			return watchQuit
		case <-p.Done():
			in.logger.Info("plugin exited", "pid", p.Pid())
			return watchExited
		case <-in.reconf.signal:
			if in.beginReconfigure(p) {
				return watchReconfigure
			}
			continue
		case <-idle:
			left, since := in.idleLeft(p)
			if left == 0 {
				if busy, why := in.busy(p); busy {
					in.logger.Debug("plugin idle but busy: kept running", "reason", why)
					in.touch()
					left = in.spec.IdleStop
				} else if in.beginIdleStop(p, since) {
					return watchIdle
				} else {
					left, _ = in.idleLeft(p)
				}
			}
			idleTimer.Reset(max(left, 10*time.Millisecond))
			continue
		case pingErr = <-ping:
			ping = nil
			if pingErr == nil {
				waiting = time.Time{}
				in.answered(p)
			}
			// A failed ping (its exit, if that is why, comes through
			// Done) is asked again at the next tick.
			continue
		case <-tick.C:
		}
		if ping == nil {
			ping = make(chan error, 1)
			go func(ch chan<- error) {
				ctx, cancel := context.WithTimeout(in.quitCtx, o.hangTimeout)
				defer cancel()
				ch <- p.Ping(ctx)
			}(ping)
			if waiting.IsZero() {
				waiting = time.Now()
			}
		}
		silent := time.Since(waiting)
		if silent < o.healthTimeout {
			continue
		}
		why := fmt.Sprintf("%s: health check: no answer for %s", in.id, silent.Round(time.Millisecond))
		if pingErr != nil {
			why += fmt.Sprintf(" (%v)", pingErr)
		}
		// Silence counts only while the process could answer: one held
		// (stopped, frozen…) is waited for, and given the whole hang
		// timeout again once it runs.
		if held := processHeld(p.Pid()); held != "" {
			waiting = time.Now()
			in.notAnswering(p, why+"; the process is "+held+": waiting for it")
			continue
		}
		in.notAnswering(p, why)
		if silent < o.hangTimeout {
			continue
		}
		in.logger.Error("plugin hung: it can run but answered no ping, killing it", "pid", p.Pid(), "silent", silent)
		in.mu.Lock()
		in.lastErr = fmt.Sprintf("%s: health check: hung, no answer for %s: killed", in.id, silent.Round(time.Millisecond))
		in.proc, in.state = nil, StateRestarting // no new calls to the hung process
		in.mu.Unlock()
		// SIGKILL at once: a graceful stop would wait for a plugin that does
		// not answer. The pid is still this process's, as it is not reaped
		// before Done.
		_ = unix.Kill(p.Pid(), unix.SIGKILL)
		<-p.Done()
		return watchExited
	}
}

// processHeld says why process pid cannot run now ("" when it can): it is
// stopped by a signal or a tracer, or in uninterruptible sleep. Such a
// process is not hung, and killing it would not help.
func processHeld(pid int) string {
	proc, err := procfs.NewProc(pid)
	if err != nil {
		return ""
	}
	st, err := proc.Stat()
	if err != nil {
		return ""
	}
	switch st.State {
	case "T":
		return "stopped by a signal"
	case "t":
		return "stopped by a tracer"
	case "D":
		return "in uninterruptible sleep"
	}
	// A cgroup v2 freezer holds its tasks in an ordinary sleep.
	cgroups, _ := proc.Cgroups()
	for _, cg := range cgroups {
		if cg.HierarchyID != 0 {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup", cg.Path, "cgroup.events"))
		if slices.Contains(strings.Split(string(b), "\n"), "frozen 1") {
			return "frozen (cgroup freezer)"
		}
	}
	return ""
}

// notAnswering records why p does not answer; in.mu is not held.
func (in *instance) notAnswering(p *host.Process, msg string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc != p {
		return
	}
	in.lastErr = msg
	if in.state == StateRunning {
		in.state = StateUnresponsive
		in.logger.Warn("plugin does not answer", "pid", p.Pid(), "error", msg)
	}
}

// answered records that p answered a ping.
func (in *instance) answered(p *host.Process) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc == p && in.state == StateUnresponsive {
		in.state = StateRunning
		in.logger.Info("plugin answers again", "pid", p.Pid())
	}
}

func (in *instance) setState(s string) {
	in.mu.Lock()
	in.state = s
	in.mu.Unlock()
}

// stop ends the supervisor and the process, and waits for both.
func (in *instance) stop() {
	in.quitOnce.Do(func() {
		close(in.quit)
		in.cancel()
	})
	<-in.done
}

// unavailableLocked is the Unavailable error, naming the plugin, of a call
// while no process serves; in.mu is held.
func (in *instance) unavailableLocked() error {
	switch in.state {
	case StateStopped:
		return unavailable(in.id, "plugin is stopped")
	case StateStarting:
		return unavailable(in.id, "plugin is starting")
	case StateFailed:
		return unavailable(in.id, "plugin is down: "+strings.TrimPrefix(in.lastErr, in.id+": "))
	default:
		return unavailable(in.id, "plugin is restarting")
	}
}

func (in *instance) status() Status {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := Status{
		Kind:         in.spec.Kind,
		Name:         in.spec.Name,
		Path:         in.spec.Path,
		Version:      in.info.Version,
		State:        in.state,
		Restarts:     in.restarts,
		Capabilities: append([]string(nil), in.info.Capabilities...),
		LastError:    in.lastErr,
	}
	if in.proc != nil {
		st.Pid = in.proc.Pid()
	}
	return st
}
