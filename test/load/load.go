// Package load is the test harness's load generator. With KEEL_TEST_LOAD=1
// a test binary's TestMain runs its tests while every core is kept busy by
// a spinning process at normal priority and one goroutine writes and
// fsyncs a file without pause: timings that hold only on an idle machine
// then fail, as they would on a loaded node.
//
//	func TestMain(m *testing.M) { os.Exit(load.Main(m)) }
//
// or, for some tests of a package only, load.During(t) in each.
package load

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Env is the variable that turns the load on ("1").
const Env = "KEEL_TEST_LOAD"

// On reports whether the load is requested.
func On() bool { return os.Getenv(Env) == "1" }

// Main runs m's tests, under load when On. It returns m.Run's code.
func Main(m interface{ Run() int }) int {
	if !On() {
		return m.Run()
	}
	stop, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: %v\n", err)
		return 1
	}
	defer stop()
	return m.Run()
}

var (
	duringMu   sync.Mutex
	duringN    int
	duringStop func()
)

// TB is what During needs of a test.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// During puts t under load when On, for packages where only some tests
// should be (Main loads them all): the load starts with the first such
// test running and stops when the last one ends.
func During(t TB) {
	t.Helper()
	if !On() {
		return
	}
	duringMu.Lock()
	defer duringMu.Unlock()
	if duringN == 0 {
		stop, err := Start()
		if err != nil {
			t.Fatalf("load: %v", err)
		}
		duringStop = stop
	}
	duringN++
	t.Cleanup(func() {
		duringMu.Lock()
		defer duringMu.Unlock()
		if duringN--; duringN == 0 {
			duringStop()
		}
	})
}

// spin is the busy loop each spinner runs. It ends by itself when its
// parent (the test binary) is gone, even if the SIGKILL that
// Pdeathsig promises never comes (the thread that forked it exited, or a
// pid namespace swallowed it).
const spin = `p=$1; while kill -0 "$p" 2>/dev/null; do i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; done`

// Start starts one spinning process per CPU, each in its own process
// group, and the fsync writer. stop ends them all and waits for them.
func Start() (stop func(), err error) {
	n := runtime.NumCPU()
	var cmds []*exec.Cmd
	kill := func() {
		for _, c := range cmds {
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			c.Wait()
		}
	}
	for range n {
		c := exec.Command("/bin/sh", "-c", spin, "spin", strconv.Itoa(os.Getpid()))
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			kill()
			return nil, fmt.Errorf("start spinner: %w", err)
		}
		cmds = append(cmds, c)
	}
	removeOrphans()
	dir, err := os.MkdirTemp("", fmt.Sprintf("keel-load-%d-", os.Getpid()))
	if err != nil {
		kill()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { fsyncLoop(ctx, dir) })
	fmt.Fprintf(os.Stderr, "load: %d spinning processes and an fsync writer in %s (%s=1)\n", n, dir, Env)
	return sync.OnceFunc(func() {
		cancel()
		wg.Wait()
		kill()
		os.RemoveAll(dir)
	}), nil
}

// removeOrphans removes the writer directories of test binaries that died
// without stopping their load (a panic, a timeout): each is named after
// its process.
func removeOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "keel-load-*-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.Split(filepath.Base(d), "-")[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// fsyncLoop writes 64 KiB blocks to a file, fsyncing each, and starts the
// file over every 16 MiB so it stays small; it stops when ctx ends. Errors
// (a full disk) pause it rather than end it: the load stays on.
func fsyncLoop(ctx context.Context, dir string) {
	block := make([]byte, 64<<10)
	for i := range block {
		block[i] = byte(i)
	}
	path := filepath.Join(dir, "fsync")
	for ctx.Err() == nil {
		f, err := os.Create(path)
		if err != nil {
			pause(ctx)
			continue
		}
		for written := 0; written < 16<<20 && ctx.Err() == nil; written += len(block) {
			if _, err := f.Write(block); err != nil {
				break
			}
			if err := f.Sync(); err != nil {
				break
			}
		}
		f.Close()
	}
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}
