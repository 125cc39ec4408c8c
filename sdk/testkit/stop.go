package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// StopProcess stops pid with SIGSTOP and returns once every thread of it is
// stopped, with a function that continues it (once; safe to call again).
// kill(2) only queues the stop: the kernel wakes one thread to begin it, and
// on a loaded machine the others keep running, and answering, until that
// thread gets a CPU. A test that takes the process for stopped when kill
// returns is right only on an idle machine.
//
// It fails the test if pid cannot be signalled or does not stop within
// limit (a process in uninterruptible sleep stops when it leaves it).
func StopProcess(t TB, pid int, limit time.Duration) (resume func()) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop pid %d: %v", pid, err)
	}
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	deadline := time.Now().Add(limit)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		stopped, err := allThreadsStopped(pid)
		if stopped {
			return resume
		}
		if err != nil || time.Now().After(deadline) {
			resume()
			t.Fatalf("pid %d not stopped within %s after SIGSTOP: %v", pid, limit, err)
		}
		time.Sleep(wait)
	}
}

// allThreadsStopped reports whether every thread of pid is in state T
// (stopped) from /proc/PID/task/TID/stat.
func allThreadsStopped(pid int) (bool, error) {
	dir := filepath.Join("/proc", fmt.Sprint(pid), "task")
	tids, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, tid := range tids {
		b, err := os.ReadFile(filepath.Join(dir, tid.Name(), "stat"))
		if err != nil {
			return false, err
		}
		// The state follows the command name, which is in parentheses and
		// may itself hold ") ".
		s := string(b)
		i := strings.LastIndex(s, ") ")
		if i < 0 || i+2 >= len(s) {
			return false, fmt.Errorf("%s: unexpected stat %q", tid.Name(), s)
		}
		if s[i+2] != 'T' {
			return false, nil
		}
	}
	return true, nil
}
