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
// RunAs runs a test again as another user, e.g. to see what a plugin does
// without the privilege to mount. It imports only the standard library.
package testkit

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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

// Nobody is the uid and gid of the unprivileged user nobody.
const Nobody = 65534

// RunAs runs the test named name of this test binary again, in a process
// of uid and gid (e.g. Nobody) with env added, and returns its output; t
// fails when that run does not pass. The test tells the two runs apart by
// env, and works as that user in its own t.TempDir(). The process runs a
// copy of the binary in a dir anyone can reach, as go test's own is root's
// alone. Needs root (it skips, or fails when strict, without).
func RunAs(t *testing.T, uid, gid int, name string, env ...string) string {
	t.Helper()
	RequireRoot(t, fmt.Sprintf("run a test as uid %d", uid))
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, filepath.Base(os.Args[0]))
	if err := copyFile(os.Args[0], bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+name+" ") {
		t.Fatalf("%s as uid %d: %v\n%s", name, uid, err, out)
	}
	return string(out)
}

// copyFile copies from to a new file to with mode.
func copyFile(from, to string, mode os.FileMode) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
