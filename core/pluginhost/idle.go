package pluginhost

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk/host"
)

// callMode is how a call's context marks it: an ordinary call, Passive or
// IfRunning.
type callMode int

const (
	callOrdinary callMode = iota
	callPassive
	callIfRunning
)

type callModeKey struct{}

func modeOf(ctx context.Context) callMode {
	m, _ := ctx.Value(callModeKey{}).(callMode)
	return m
}

// Passive marks ctx's calls as ones that neither start a plugin nor keep it
// running: such a call waits, until ctx ends, for the plugin to run (started
// by another call, or restarted), is not counted in flight, and is cancelled
// when the plugin is stopped for idleness. keeld subscribes to a runtime's
// events and asks it for its tasks before an idle stop this way, so that
// neither keeps the runtime up.
func Passive(ctx context.Context) context.Context {
	return context.WithValue(ctx, callModeKey{}, callPassive)
}

func isPassive(ctx context.Context) bool { return modeOf(ctx) == callPassive }

// IfRunning marks ctx's calls as ones that reach the plugin only if a
// process serves it now: one stopped for idleness, not started yet (lazy),
// starting or down is neither started nor waited for, and the call fails at
// once with Unavailable. A call that reaches it holds it running while in
// flight, as any call does, but is no use: its end does not restart the
// plugin's idle period. keeld's background garbage collection calls this way
// the plugins it has nothing to remove from, so that it neither
// starts an idle plugin nor keeps one running.
func IfRunning(ctx context.Context) context.Context {
	return context.WithValue(ctx, callModeKey{}, callIfRunning)
}

// startAttempt is one start of a stopped plugin asked by a call; the calls
// that arrive meanwhile wait for the same attempt.
type startAttempt struct {
	done chan struct{} // closed when the attempt ends
	err  error         // how it failed; nil when the plugin runs
}

// acquire returns the process a call goes to, and a release the call runs
// when it ends, once. A call that finds the plugin stopped for idleness
// (or never started: a lazy plugin) starts it and waits for the start;
// concurrent calls share one start. A non-passive call holds the plugin
// running until release; an IfRunning one finds it running or fails.
func (in *instance) acquire(ctx context.Context) (*host.Process, func(), error) {
	mode := modeOf(ctx)
	passive, ifRunning := mode == callPassive, mode == callIfRunning
	for {
		in.mu.Lock()
		if in.proc != nil {
			p := in.proc
			if passive {
				in.mu.Unlock()
				return p, func() {}, nil
			}
			in.inflight++
			in.mu.Unlock()
			var once sync.Once
			return p, func() {
				once.Do(func() {
					in.mu.Lock()
					in.inflight--
					if !ifRunning {
						in.lastUse = time.Now()
					}
					in.mu.Unlock()
				})
			}, nil
		}
		if ifRunning {
			in.mu.Unlock()
			return nil, nil, unavailable(in.id, "plugin is not running")
		}
		stopped := in.state == StateStopped
		if passive && !stopped {
			// Wait for whoever starts it.
			running := in.running
			in.mu.Unlock()
			select {
			case <-running:
				continue
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("%s: waiting for the plugin to run: %w", in.id, ctx.Err())
			}
		}
		if !in.idle || stopped {
			err := in.unavailableLocked()
			in.mu.Unlock()
			return nil, nil, err
		}
		a := in.starting
		if a == nil {
			a = &startAttempt{done: make(chan struct{})}
			in.starting = a
			in.state = StateStarting
			select {
			case in.wake <- struct{}{}:
			default: // a wake is pending already
			}
		}
		in.mu.Unlock()
		select {
		case <-a.done:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%s: waiting for the plugin to start: %w", in.id, ctx.Err())
		}
		if a.err != nil {
			return nil, nil, a.err
		}
	}
}

// passiveContext bounds a passive call's ctx by p's run: it is cancelled
// when p is stopped for idleness, so a passive stream (an event
// subscription) does not hold the graceful stop up.
func (in *instance) passiveContext(ctx context.Context, p *host.Process) (context.Context, context.CancelFunc) {
	in.mu.Lock()
	procCtx := in.procCtx
	if in.proc != p {
		procCtx = nil
	}
	in.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	if procCtx == nil {
		cancel()
		return ctx, cancel
	}
	stop := context.AfterFunc(procCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

// idleLeft says how long p must still go unused before it may be stopped
// for idleness: 0 when it may be now. A plugin with calls in flight, or
// not plainly running, waits a whole idle period again.
func (in *instance) idleLeft(p *host.Process) (time.Duration, time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	d := in.spec.IdleStop
	if in.proc != p || in.state != StateRunning || in.inflight > 0 {
		return d, time.Time{}
	}
	return max(0, d-time.Since(in.lastUse)), in.lastUse
}

// busy asks the spec's Busy hook, over a passive connection, whether p has
// work that must keep it running though no call is in flight (a runtime's
// tasks). An error keeps it running.
func (in *instance) busy(p *host.Process) (bool, string) {
	if in.spec.Busy == nil {
		return false, ""
	}
	ctx, cancel := context.WithTimeout(Passive(in.quitCtx), in.h.opts.healthTimeout)
	defer cancel()
	busy, err := in.spec.Busy(ctx, passiveConn{&conn{in: in}})
	if err != nil {
		return true, err.Error()
	}
	if busy {
		return true, "busy"
	}
	return false, ""
}

// beginIdleStop takes p out of service for an idle stop if it is still
// unused since lastUse: new calls then wait for a new process. It tells
// whether it did.
func (in *instance) beginIdleStop(p *host.Process, lastUse time.Time) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc != p || in.state != StateRunning || in.inflight > 0 || !in.lastUse.Equal(lastUse) {
		return false
	}
	in.proc, in.idle, in.state = nil, true, StateIdle
	in.procCancel() // ends the passive calls to p
	return true
}

// touch records a use now: the idle period starts again.
func (in *instance) touch() {
	in.mu.Lock()
	in.lastUse = time.Now()
	in.mu.Unlock()
}

// startOnCall waits, while the plugin is stopped for idleness, for a call
// to ask for it (acquire), then starts it. A failed start is the waiting
// calls' error and is retried by the next call, not by backoff: nothing
// needs the plugin until a call does. It returns nil once stop was asked.
func (in *instance) startOnCall() *host.Process {
	for {
		select {
		case <-in.quit:
			return nil
		case <-in.wake:
		}
		in.mu.Lock()
		a := in.starting
		in.mu.Unlock()
		if a == nil {
			continue
		}
		began := time.Now()
		p, err := in.launch(in.quitCtx)
		in.mu.Lock()
		select {
		case <-in.quit:
			in.mu.Unlock()
			if p != nil {
				p.Kill()
			}
			return nil
		default:
		}
		in.starting = nil
		if err != nil {
			in.state, in.lastErr = StateFailed, err.Error()
			a.err = startFailed(in.id, err)
			close(a.done)
			in.mu.Unlock()
			in.logger.Error("plugin failed to start on demand", "error", err)
			continue
		}
		in.setRunning(p)
		close(a.done)
		in.mu.Unlock()
		in.logger.Info("plugin started on demand", "pid", p.Pid(), "took", time.Since(began).Round(time.Millisecond))
		in.emit(EventStarted, p.Pid())
		return p
	}
}

// startFailed is the error of the calls that asked for a start that
// failed: Unavailable, naming the plugin and why.
func startFailed(id string, err error) error {
	return unavailable(id, "plugin failed to start: "+strings.TrimPrefix(err.Error(), id+": "))
}

// passiveConn marks every call through it passive.
type passiveConn struct{ c *conn }

func (pc passiveConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return pc.c.Invoke(Passive(ctx), method, args, reply, opts...)
}

func (pc passiveConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return pc.c.NewStream(Passive(ctx), desc, method, opts...)
}
