package testkit_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// recorder is a TB that records what a helper did to it; as with
// *testing.T, Fatalf and Skipf end the goroutine that calls them.
type recorder struct{ fatal, skip string }

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f on r in a goroutine of its own, as testing runs a test.
func (r *recorder) run(f func(testkit.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}

// TestSkipOrFail: unset, "0" and "false" skip with the reason; any other
// value fails with it and names the variable.
func TestSkipOrFail(t *testing.T) {
	for _, tt := range []struct {
		env    string
		strict bool
	}{{"", false}, {"0", false}, {"false", false}, {" 0 ", false}, {"1", true}, {"true", true}, {"yes", true}} {
		t.Run(fmt.Sprintf("%q", tt.env), func(t *testing.T) {
			t.Setenv(testkit.Strict, tt.env)
			if testkit.IsStrict() != tt.strict {
				t.Fatalf("IsStrict: %v, want %v", !tt.strict, tt.strict)
			}
			var r recorder
			r.run(func(t testkit.TB) { testkit.SkipOrFail(t, "needs %s", "mkfs.btrfs") })
			want := recorder{skip: "needs mkfs.btrfs"}
			if tt.strict {
				want = recorder{fatal: "KEEL_TEST_STRICT is set: needs mkfs.btrfs"}
			}
			if r != want {
				t.Errorf("%+v, want %+v", r, want)
			}
		})
	}
}

// TestStopProcess: StopProcess returns with every thread of the process
// stopped, even with the machine busy; resume continues it, once.
func TestStopProcess(t *testing.T) {
	// A multi-threaded process: every thread must be stopped.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TESTKIT_SPIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	resume := testkit.StopProcess(t, cmd.Process.Pid, time.Minute)
	for _, tid := range threads(t, cmd.Process.Pid) {
		if s := threadState(t, cmd.Process.Pid, tid); s != 'T' {
			t.Errorf("thread %s in state %c after StopProcess, want T", tid, s)
		}
	}
	resume()
	resume()
	if s := threadState(t, cmd.Process.Pid, fmt.Sprint(cmd.Process.Pid)); s == 'T' {
		t.Errorf("still stopped after resume")
	}
}

func threads(t *testing.T, pid int) []string {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var tids []string
	for _, e := range entries {
		tids = append(tids, e.Name())
	}
	return tids
}

func threadState(t *testing.T, pid int, tid string) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(b, []byte(") "))
	return b[i+2]
}

// TestMain lets the test binary be the busy process TestStopProcess stops:
// goroutines spinning on every CPU, so threads are running when the stop
// comes.
func TestMain(m *testing.M) {
	if os.Getenv("TESTKIT_SPIN") == "1" {
		var n atomic.Uint64
		for range runtime.NumCPU() {
			go func() {
				for {
					n.Add(1)
				}
			}()
		}
		select {}
	}
	os.Exit(m.Run())
}

// TestRunAs runs itself again as nobody.
func TestRunAs(t *testing.T) {
	if os.Getenv("KEEL_TEST_RUN_AS") != "" {
		if os.Geteuid() != testkit.Nobody || os.Getegid() != testkit.Nobody {
			t.Fatalf("running as %d:%d, want nobody", os.Geteuid(), os.Getegid())
		}
		return
	}
	testkit.RunAs(t, testkit.Nobody, testkit.Nobody, t.Name(), "KEEL_TEST_RUN_AS=1")
}
