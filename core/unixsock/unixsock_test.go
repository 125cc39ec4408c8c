package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()

	// A missing directory is made; the socket is 0660.
	path := filepath.Join(dir, "sub", "a.sock")
	l, err := Listen(path, os.Getuid(), os.Getgid(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, %v; want 0660", fi.Mode(), err)
	}
	// One that answers is refused.
	if _, err := Listen(path, os.Getuid(), os.Getgid(), "test"); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second listen: %v, want AlreadyExists", err)
	}
	// One left by a dead server is replaced.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = Listen(path, os.Getuid(), os.Getgid(), "test")
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l.Close()

	// Anything else at the path is the operator's: refused and kept.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, os.Getuid(), os.Getgid(), "test"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("over a regular file: %v, want FailedPrecondition", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "mine" {
		t.Errorf("the file is %q, %v after the refusal", b, err)
	}
}
