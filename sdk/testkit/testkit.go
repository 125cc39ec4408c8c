// Package testkit is what tests share about the machine they run on, keel's
// and a plugin author's alike: a test that cannot run here (not root, a tool
// or a kernel feature missing) skips with its reason, except when the
// environment variable KEEL_TEST_STRICT is set (to anything but "0" or
// "false"), where it fails, so that a skipped test never passes for done.
// keel's CI sets it.
//
//	func TestMount(t *testing.T) {
//		testkit.RequireRoot(t, "mount overlays")
//		if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
//			testkit.SkipOrFail(t, "needs mkfs.btrfs (btrfs-progs): %v", err)
//		}
//		…
//	}
//
// It imports only the standard library.
package testkit

import (
	"os"
	"strings"
)

// Strict names the environment variable that turns skips into failures.
const Strict = "KEEL_TEST_STRICT"

// IsStrict reports whether a test that cannot run here must fail: Strict
// is set to anything but "", "0" or "false".
func IsStrict() bool {
	switch strings.TrimSpace(os.Getenv(Strict)) {
	case "", "0", "false":
		return false
	}
	return true
}

// TB is what the helpers need of a test: *testing.T, *testing.B and
// *testing.F fit, and so does a suite's own test type.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// SkipOrFail skips the test with the reason, or fails it with the reason
// when strict.
func SkipOrFail(t TB, format string, args ...any) {
	t.Helper()
	if IsStrict() {
		t.Fatalf(Strict+" is set: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips (or, strict, fails) a test that is not run as root;
// why says what it needs root for ("needs root to <why>").
func RequireRoot(t TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root to %s", why)
	}
}
