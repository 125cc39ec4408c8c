package shim

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"time"

	gorunc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// reaper reaps every child of the shim, a child subreaper: the runc
// commands it starts (handed back to go-runc through the ProcessMonitor
// interface) and the container's processes, which runc leaves to it.
// exec.Cmd.Wait would race a wait4(-1) loop, so commands register their pid
// under the lock they were started with, and the loop looks exits up under
// the same lock.
type reaper struct {
	mu      sync.Mutex
	cmds    map[int]chan gorunc.Exit
	onExit  func(gorunc.Exit) // exits of processes no command waits for
	pending []gorunc.Exit     // exits reaped before onExit was set
}

var _ gorunc.ProcessMonitor = (*reaper)(nil)

func newReaper() *reaper {
	r := &reaper{cmds: map[int]chan gorunc.Exit{}}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			r.reap()
		}
	}()
	return r
}

// setOnExit sets the handler of container exits and hands it what was
// reaped before.
func (r *reaper) setOnExit(f func(gorunc.Exit)) {
	r.mu.Lock()
	r.onExit = f
	pending := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, e := range pending {
		f(e)
	}
}

func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		e := gorunc.Exit{Pid: pid, Status: exitCode(ws), Timestamp: time.Now()}
		r.mu.Lock()
		if ch, ok := r.cmds[pid]; ok {
			delete(r.cmds, pid)
			r.mu.Unlock()
			ch <- e
			continue
		}
		f := r.onExit
		if f == nil {
			r.pending = append(r.pending, e)
		}
		r.mu.Unlock()
		if f != nil {
			f(e)
		}
	}
}

// exitCode is the status a shell would report: 128+signal for a kill.
func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func (r *reaper) Start(c *exec.Cmd) (chan gorunc.Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := c.Start(); err != nil {
		return nil, err
	}
	ch := make(chan gorunc.Exit, 1)
	r.cmds[c.Process.Pid] = ch
	return ch, nil
}

func (r *reaper) StartLocked(c *exec.Cmd) (chan gorunc.Exit, error) {
	return r.Start(c)
}

func (r *reaper) Wait(c *exec.Cmd, ch chan gorunc.Exit) (int, error) {
	e := <-ch
	// Cmd.Wait fails (the pid is reaped) but still waits for the goroutines
	// copying the command's output.
	_ = c.Wait()
	return e.Status, nil
}
