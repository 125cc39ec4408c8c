package e2e

import (
	"strings"
	"testing"
)

// TestCLILease: what a command makes under --lease (or KEEL_LEASE) survives
// a collection; what it makes without one does not.
func TestCLILease(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)
	k.ok("lease", "create", "--id", "mine")
	held := strings.TrimSpace(k.keelIn(strings.NewReader("held\n"), "--lease", "mine", "content", "ingest", "held").stdout)
	loose := strings.TrimSpace(k.keelIn(strings.NewReader("loose\n"), "content", "ingest", "loose").stdout)
	k.ok("--lease", "mine", "snapshot", "prepare", "kept")
	if held == "" || loose == "" {
		t.Fatalf("ingest printed %q and %q", held, loose)
	}
	k.ok("gc")
	left := k.ok("content", "ls", "-q")
	if !strings.Contains(left, held) || strings.Contains(left, loose) {
		t.Errorf("after gc, content ls -q:\n%s\nwant %s kept and %s collected", left, held, loose)
	}
	if snaps := k.ok("snapshot", "ls", "-q"); strings.TrimSpace(snaps) != "kept" {
		t.Errorf("after gc, snapshot ls -q: %q, want kept", snaps)
	}
}
