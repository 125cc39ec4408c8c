package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// Backoff of keel-cri's restarts: doubled from criBackoffMin after each
// death, up to criBackoffMax, and back to the minimum once a run lasted
// criStableRun.
const (
	criBackoffMin = 100 * time.Millisecond
	criBackoffMax = 30 * time.Second
	criStableRun  = 10 * time.Second
)

// criSupervisor runs keel-cri, the CRI server, while keeld serves: it
// starts it in its own process group (killed with keeld by its parent
// death signal, as plugins are), restarts it with backoff when it dies,
// relays its log into keeld's, and stops it with keeld.
type criSupervisor struct {
	cfg     config.CRI
	keelAPI string
	level   string
	logger  hclog.Logger
	cancel  context.CancelFunc
	done    chan struct{}

	mu   sync.Mutex
	st   criState
	proc *os.Process
}

// criState is keel-cri's health (keelv1.CRIServer's moving fields).
type criState struct {
	state     string
	pid       int
	restarts  int
	lastError string
}

// startCRI starts keel-cri when the config enables it.
func (s *Server) startCRI() {
	cfg := s.cfg.CRIConfig()
	if !cfg.Enabled {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cs := &criSupervisor{cfg: cfg, keelAPI: s.cfg.GRPC.Address, level: s.cfg.LogLevel, logger: s.logger.Named("cri"),
		cancel: cancel, done: make(chan struct{}), st: criState{state: "starting"}}
	s.cri = cs
	go cs.supervise(ctx)
}

// stop ends keel-cri: SIGTERM, then SIGKILL when ctx ends first.
func (cs *criSupervisor) stop(ctx context.Context) {
	if cs == nil {
		return
	}
	cs.cancel()
	select {
	case <-cs.done:
	case <-ctx.Done():
		cs.mu.Lock()
		if cs.proc != nil {
			cs.proc.Kill()
		}
		cs.mu.Unlock()
		<-cs.done
	}
}

// status is keel-cri's health for keel info; nil when not enabled.
func (cs *criSupervisor) status() *keelv1.CRIServer {
	if cs == nil {
		return nil
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return &keelv1.CRIServer{Address: cs.cfg.Address, Path: cs.cfg.Path, Namespace: cs.cfg.Namespace,
		State: cs.st.state, Pid: int32(cs.st.pid), Restarts: int32(cs.st.restarts), LastError: cs.st.lastError}
}

func (cs *criSupervisor) set(fn func(st *criState)) {
	cs.mu.Lock()
	fn(&cs.st)
	cs.mu.Unlock()
}

func (cs *criSupervisor) supervise(ctx context.Context) {
	defer close(cs.done)
	backoff := criBackoffMin
	for {
		started := time.Now()
		err := cs.runOnce(ctx)
		if ctx.Err() != nil {
			cs.set(func(st *criState) { st.state, st.pid = "stopped", 0 })
			cs.logger.Info("stopped")
			return
		}
		if time.Since(started) >= criStableRun {
			backoff = criBackoffMin
		}
		cs.set(func(st *criState) {
			st.state, st.pid, st.lastError = "restarting", 0, err.Error()
			st.restarts++
		})
		cs.logger.Warn("keel-cri died; restarting it", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			cs.set(func(st *criState) { st.state = "stopped" })
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, criBackoffMax)
	}
}

// runOnce runs keel-cri until it exits, or until ctx ends (then it is
// sent SIGTERM); it returns why it ended.
func (cs *criSupervisor) runOnce(ctx context.Context) error {
	cmd := exec.Command(cs.cfg.Path, "--address", cs.cfg.Address, "--keel-address", cs.keelAPI,
		"--namespace", cs.cfg.Namespace, "--sandbox-image", cs.cfg.SandboxImage,
		"--stream-address", net.JoinHostPort(cs.cfg.StreamAddress, cs.cfg.StreamPort), "--log-level", cs.level, "--log-json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	// From keeld's fork thread: Pdeathsig follows the forking thread.
	if err := host.StartLocked(cmd); err != nil {
		return fmt.Errorf("start %s: %w", cs.cfg.Path, err)
	}
	pid := cmd.Process.Pid
	cs.mu.Lock()
	cs.proc = cmd.Process
	cs.st.state, cs.st.pid = "starting", pid
	cs.mu.Unlock()
	cs.logger.Info("started", "path", cs.cfg.Path, "pid", pid, "address", cs.cfg.Address)

	var relay sync.WaitGroup
	var lastLine string // its last error line, for the status
	relay.Go(func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "serving ") {
				cs.set(func(st *criState) {
					if st.pid == pid {
						st.state = "running"
					}
				})
			}
		}
	})
	relay.Go(func() { lastLine = cs.relayLog(stderr) })

	exited := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
		case <-exited:
		}
	}()
	relay.Wait() // the pipes close when it exits
	err = cmd.Wait()
	close(exited)
	cs.mu.Lock()
	cs.proc = nil
	cs.mu.Unlock()
	if err == nil {
		err = errors.New("exited")
	}
	if lastLine != "" {
		err = fmt.Errorf("%w: %s", err, lastLine)
	}
	return err
}

// relayLog logs each of keel-cri's JSON log lines in keeld's log at its
// level; it returns the last error line, for the status.
func (cs *criSupervisor) relayLog(r io.Reader) (lastError string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var entry map[string]any
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			// Not hclog's: a crash or a flag error.
			cs.logger.Warn(sc.Text())
			lastError = sc.Text()
			continue
		}
		msg, _ := entry["@message"].(string)
		level := hclog.LevelFromString(fmt.Sprint(entry["@level"]))
		var args []any
		for k, v := range entry {
			if !strings.HasPrefix(k, "@") {
				args = append(args, k, v)
			}
		}
		if level >= hclog.Error {
			lastError = msg
		}
		if level == hclog.NoLevel {
			level = hclog.Info
		}
		cs.logger.Log(level, msg, args...)
	}
	return lastError
}

// missingCNIPlugins are those of types found in none of dirs (the config's
// cni_bin_dirs).
func missingCNIPlugins(dirs, types []string) []string {
	var missing []string
	for _, t := range types {
		found := false
		for _, d := range dirs {
			if fi, err := os.Stat(filepath.Join(d, t)); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, t)
		}
	}
	return missing
}

// resolverTakesCredentials fails a call that carries credentials
// (resolver.WithCredentials) when the resolver plugin name is known not
// to use them: a pull must not go on without the login it was given.
func (s *Server) resolverTakesCredentials(ctx context.Context, name string) error {
	if _, ok := resolver.CredentialsFrom(ctx); !ok {
		return nil
	}
	if s.knownWithout(sdk.KindResolver, name, resolver.CapabilityCallCredentials) {
		return fmt.Errorf("resolver %q does not take credentials with a call (no %s capability): set them in its config: %w",
			name, resolver.CapabilityCallCredentials, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// knownWithout tells whether the plugin kind.name has started and did
// not announce capability (one not started yet is not known).
func (s *Server) knownWithout(kind, name, capability string) bool {
	for _, st := range s.plugins.Plugins() {
		if st.Kind == kind && st.Name == name && st.Version != "" && !slices.Contains(st.Capabilities, capability) {
			return true
		}
	}
	return false
}
