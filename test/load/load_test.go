package load

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// children lists the pids of this process's live children running sh.
func children(t *testing.T) []int {
	t.Helper()
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b)[i+2:])
		if len(f) > 1 && f[1] == self && f[0] != "Z" && strings.Contains(string(b), "(sh)") {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(s)))
			out = append(out, pid)
		}
	}
	return out
}

// TestStartStop: Start runs a spinner per CPU and stop leaves none; it
// removes the directory a dead test binary left.
func TestStartStop(t *testing.T) {
	orphan, err := os.MkdirTemp("", "keel-load-999999999-") // above pid_max
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(orphan)
	before := len(children(t))
	stop, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if got := len(children(t)) - before; got < 1 {
		t.Fatalf("%d spinners running", got)
	}
	if _, err := os.Stat(orphan); err == nil {
		t.Errorf("%s left", orphan)
	}
	// Stopped once the fsync writer has written.
	written := filepath.Join(os.TempDir(), "keel-load-"+strconv.Itoa(os.Getpid())+"-*", "fsync")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m, _ := filepath.Glob(written); len(m) == 1 {
			if fi, err := os.Stat(m[0]); err == nil && fi.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fsync writes in %s within 10s", written)
		}
	}
	stop()
	if got := len(children(t)) - before; got != 0 {
		t.Errorf("%d spinners left after stop", got)
	}
	if m, _ := filepath.Glob(filepath.Dir(written)); len(m) != 0 {
		t.Errorf("writer dir left after stop: %q", m)
	}
}

// TestDuring: tests sharing During share one load, which ends with the
// last of them.
func TestDuring(t *testing.T) {
	t.Setenv(Env, "1")
	before := len(children(t))
	t.Run("outer", func(t *testing.T) {
		During(t)
		n := len(children(t)) - before
		t.Run("inner", func(t *testing.T) {
			During(t)
			if got := len(children(t)) - before; got != n {
				t.Errorf("%d spinners with two tests under load, %d with one", got, n)
			}
		})
		if got := len(children(t)) - before; got != n {
			t.Errorf("%d spinners after the inner test, want %d", got, n)
		}
	})
	if got := len(children(t)) - before; got != 0 {
		t.Errorf("%d spinners left after the last test", got)
	}
}
