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

// TestStartStop: Start runs a spinner per CPU and stop leaves none.
func TestStartStop(t *testing.T) {
	before := len(children(t))
	stop, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if got := len(children(t)) - before; got < 1 {
		t.Fatalf("%d spinners running", got)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	if got := len(children(t)) - before; got != 0 {
		t.Errorf("%d spinners left after stop", got)
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
