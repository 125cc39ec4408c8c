package testkit_test

import (
	"fmt"
	"os"
	"runtime"
	"testing"

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
