package pluginhost

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
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
	proc     *sdk.Process // nil while down
	state    string
	restarts int
	lastErr  string
	info     sdk.Info
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
	}
}

// launch starts a process and configures it.
func (in *instance) launch(ctx context.Context) (*sdk.Process, error) {
	ctx, cancel := context.WithTimeout(ctx, in.h.opts.startTimeout)
	defer cancel()
	p, err := sdk.Launch(ctx, sdk.LaunchConfig{
		Path:         in.spec.Path,
		SHA256:       in.spec.SHA256,
		Kind:         in.spec.Kind,
		Instance:     in.id,
		Logger:       in.h.base,
		StartTimeout: in.h.opts.startTimeout,
	})
	if err != nil {
		return nil, err
	}
	if _, err := p.Configure(ctx, in.spec.Root, in.spec.State, in.spec.Config); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// start launches the first process and hands it to a supervisor.
func (in *instance) start(ctx context.Context) error {
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
	go in.supervise(p)
	return nil
}

// setRunning records a configured process; in.mu is held.
func (in *instance) setRunning(p *sdk.Process) {
	in.proc, in.state, in.info = p, StateRunning, p.Info()
}

func (in *instance) finish() { in.doneOnce.Do(func() { close(in.done) }) }

// supervise watches p and restarts the plugin whenever it goes down, until
// stop.
func (in *instance) supervise(p *sdk.Process) {
	defer in.finish()
	o := in.h.opts
	backoff := o.backoffMin
	for {
		upSince := time.Now()
		quit := in.watch(p)
		in.mu.Lock()
		in.proc = nil
		in.state = StateRestarting
		if quit {
			in.state = StateStopped
		}
		in.mu.Unlock()
		p.Kill() // graceful on stop; after an exit it releases the client
		if quit {
			in.logger.Info("plugin stopped")
			return
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
			p = np
			break
		}
	}
}

// watch returns when p has exited (false) or stop was asked (true). A
// process that misses healthFailures pings in a row is killed.
func (in *instance) watch(p *sdk.Process) (quit bool) {
	o := in.h.opts
	tick := time.NewTicker(o.healthInterval)
	defer tick.Stop()
	misses := 0
	for {
		select {
		case <-in.quit:
			return true
		case <-p.Done():
			in.logger.Info("plugin exited", "pid", p.Pid())
			return false
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(in.quitCtx, o.healthTimeout)
		err := p.Ping(ctx)
		cancel()
		if err == nil {
			misses = 0
			continue
		}
		select {
		case <-p.Done():
			continue // reported above
		case <-in.quit:
			return true
		default:
		}
		misses++
		in.mu.Lock()
		in.lastErr = fmt.Sprintf("%s: health check: %v", in.id, err)
		in.mu.Unlock()
		if misses < o.healthFailures {
			continue
		}
		in.logger.Error("plugin stopped answering, killing it", "pid", p.Pid(), "error", err)
		in.mu.Lock()
		in.proc, in.state = nil, StateRestarting // no new calls to the hung process
		in.mu.Unlock()
		// SIGKILL at once: a graceful stop would wait for a plugin that does
		// not answer. The pid is still this process's, as it is not reaped
		// before Done.
		_ = unix.Kill(p.Pid(), unix.SIGKILL)
		<-p.Done()
		return false
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

// current returns the running process, or an Unavailable status naming the
// plugin while there is none.
func (in *instance) current() (*sdk.Process, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc != nil {
		return in.proc, nil
	}
	switch in.state {
	case StateStopped:
		return nil, unavailable(in.id, "plugin is stopped")
	case StateStarting:
		return nil, unavailable(in.id, "plugin is starting")
	case StateFailed:
		return nil, unavailable(in.id, "plugin is down: "+strings.TrimPrefix(in.lastErr, in.id+": "))
	default:
		return nil, unavailable(in.id, "plugin is restarting")
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
