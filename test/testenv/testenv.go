// Package testenv holds what keel's test packages share about the machine
// they run on: a test that cannot run here (not root, a tool or kernel
// feature missing) skips with its reason, except under KEEL_TEST_STRICT=1
// (set by .ci/run), where it fails, so CI never passes by skipping.
package testenv

import "os"

// Strict names the variable that turns skips into failures.
const Strict = "KEEL_TEST_STRICT"

// IsStrict reports whether a test that cannot run here must fail.
func IsStrict() bool { return os.Getenv(Strict) == "1" }

// TB is what the helpers need of a test.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// SkipOrFail skips the test with the reason, or fails it when strict.
func SkipOrFail(t TB, format string, args ...any) {
	t.Helper()
	if IsStrict() {
		t.Fatalf(Strict+"=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips (or, strict, fails) a test that is not run as root;
// why says what it needs root for.
func RequireRoot(t TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root to %s", why)
	}
}
