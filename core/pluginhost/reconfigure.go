package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
)

// drainTimeout bounds how long a reconfigure waits for the calls in flight
// on the old process before it stops it.
const drainTimeout = 30 * time.Second

// reconfState is an instance's config as Reconfigure changes it; its
// fields but signal are guarded by the instance's mu.
type reconfState struct {
	// signal tells the supervisor that a new config waits (buffered 1).
	signal chan struct{}
	// config is what the next launch hands to Configure; prev is the
	// running process's, taken back when the plugin refuses config;
	// launched is what the last launch handed over (launches are one at
	// a time: the supervisor's).
	config, prev, launched json.RawMessage
	// waiters are the Reconfigure calls waiting for the outcome.
	waiters []chan error
}

func newReconfState(config json.RawMessage) reconfState {
	return reconfState{signal: make(chan struct{}, 1), config: config}
}

// launchConfig is the config a launch hands to the plugin now.
func (in *instance) launchConfig() json.RawMessage {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.reconf.launched = in.reconf.config
	return in.reconf.config
}

// stale tells whether the running process has another config than the
// current one; in.mu is held.
func (in *instance) stale() bool {
	return !sameJSON(in.reconf.launched, in.reconf.config)
}

// signalReconfigure wakes the supervisor's watch for a new config.
func (in *instance) signalReconfigure() {
	select {
	case in.reconf.signal <- struct{}{}:
	default: // one is pending already
	}
}

// Reconfigure hands the plugin instance kind.name a new config block. A
// running plugin is restarted with it, alone: new calls wait for the new
// process, the calls in flight are let finish first (for up to 30s), and
// the connection from Conn stays valid. A plugin that refuses the new
// config (its Configure fails) is started again with the previous one, and
// the refusal is returned (a *StartError for a refused config, as from
// Start). A plugin that runs no process now (idle, lazy, restarting) takes
// the new config at its next start. restarted tells whether a process was
// restarted; an unchanged config changes nothing.
func (h *Host) Reconfigure(ctx context.Context, kind, name string, config json.RawMessage) (restarted bool, err error) {
	h.mu.Lock()
	in := h.instances[kind+"."+name]
	h.mu.Unlock()
	if in == nil {
		return false, fmt.Errorf("plugin %s.%s is not configured: %w", kind, name, errdefs.ErrNotFound)
	}
	in.mu.Lock()
	if sameJSON(in.reconf.config, config) {
		in.mu.Unlock()
		return false, nil
	}
	if len(in.reconf.waiters) == 0 {
		in.reconf.prev = in.reconf.config
	}
	in.reconf.config = config
	if in.proc == nil {
		in.mu.Unlock()
		// A start under way with the old config is restarted once it
		// runs (watch).
		in.signalReconfigure()
		in.logger.Info("plugin config changed: its next start takes it", "state", in.status().State)
		return false, nil
	}
	res := make(chan error, 1)
	in.reconf.waiters = append(in.reconf.waiters, res)
	in.mu.Unlock()
	in.signalReconfigure()
	select {
	case err := <-res:
		return true, err
	case <-ctx.Done():
		return false, fmt.Errorf("%s: waiting for the restart with the new config: %w", in.id, ctx.Err())
	case <-in.done:
		return false, unavailable(in.id, "plugin is stopped")
	}
}

// sameJSON tells whether two JSON documents are equal but for spacing.
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// beginReconfigure takes p out of service for a restart with a new config,
// when p runs with another config than the current one: new calls wait for the restart (as for a start on
// demand), then the calls in flight on p are let finish. It tells whether
// it did.
func (in *instance) beginReconfigure(p *host.Process) bool {
	in.mu.Lock()
	if in.proc != p || !in.stale() {
		in.mu.Unlock()
		return false
	}
	in.proc, in.idle, in.state = nil, true, StateStarting
	in.starting = &startAttempt{done: make(chan struct{})}
	in.procCancel() // ends the passive calls to p
	in.mu.Unlock()

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(drainTimeout)
	for {
		in.mu.Lock()
		n := in.inflight
		in.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-tick.C:
		case <-deadline:
			in.logger.Warn("restarting with a new config: calls still in flight fail", "calls", n)
			return true
		case <-in.quit:
			return true
		}
	}
}

// relaunch starts the plugin again after beginReconfigure, with its new
// config, or with the previous one when the plugin refuses it; it returns
// nil when neither started (or stop was asked), the state failed.
func (in *instance) relaunch() *host.Process {
	began := time.Now()
	p, err := in.launch(in.quitCtx)
	var refused error
	if err != nil && in.quitCtx.Err() == nil {
		refused = err
		in.logger.Error("plugin refused its new config: started again with the previous one", "error", err)
		in.mu.Lock()
		in.reconf.config = in.reconf.prev
		in.mu.Unlock()
		p, err = in.launch(in.quitCtx)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	a := in.starting
	in.starting = nil
	select {
	case <-in.quit:
		if p != nil {
			p.Kill()
		}
		err = unavailable(in.id, "plugin is stopped")
	default:
	}
	if err != nil {
		in.state, in.lastErr, in.idle = StateFailed, err.Error(), false
		if a != nil {
			a.err = startFailed(in.id, err)
			close(a.done)
		}
		in.settleReconfigure(err)
		return nil
	}
	in.settleReconfigure(refused)
	in.setRunning(p)
	if a != nil {
		close(a.done)
	}
	if refused == nil {
		in.logger.Info("plugin restarted with its new config", "pid", p.Pid(), "took", time.Since(began).Round(time.Millisecond))
	}
	return p
}

// settleReconfigure answers the Reconfigure calls waiting; in.mu is held.
// A process started with an old config (the config changed while it
// started) answers none: watch restarts it.
func (in *instance) settleReconfigure(err error) {
	if err == nil && in.stale() {
		in.signalReconfigure()
		return
	}
	for _, w := range in.reconf.waiters {
		w <- err
	}
	in.reconf.waiters = nil
}
