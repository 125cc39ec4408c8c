package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestWorkDirs covers what the suite cannot see from outside: an active
// snapshot's work dir goes once it is committed, and Cleanup removes both
// kinds of orphan dir (a layer, a work dir) a crash can leave.
func TestWorkDirs(t *testing.T) {
	testkit.RequireRoot(t, "check overlay support")
	ctx := context.Background()
	root := t.TempDir()
	sn, err := New(ctx, sdk.Env{Instance: "snapshotter." + name, Root: root, Config: json.RawMessage("{}")})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = sn.Close() })
	s := store(filepath.Join(root, name))

	ids := func(dir string) []string {
		t.Helper()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	step := func(what string, err error, wantWork int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := ids(s.scratch()); len(got) != wantWork {
			t.Fatalf("after %s: work dirs %q, want %d", what, got, wantWork)
		}
	}
	_, err = sn.Prepare(ctx, "base-active", "")
	step("prepare on no parent", err, 0)
	step("commit base", sn.Commit(ctx, "base", "base-active"), 0)
	_, err = sn.Prepare(ctx, "top-active", "base")
	step("prepare on base", err, 1)
	step("commit top", sn.Commit(ctx, "top", "top-active"), 0)
	_, err = sn.View(ctx, "top-view", "top")
	step("view of top", err, 0)

	live := ids(s.layers())
	for _, dir := range []string{s.layer("orphan-layer"), s.workDir("orphan-work")} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := sn.(snapshot.Cleaner).Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := ids(s.layers()); !slices.Equal(got, live) {
		t.Errorf("layers after Cleanup = %q, want %q", got, live)
	}
	if got := ids(s.scratch()); len(got) != 0 {
		t.Errorf("work dirs after Cleanup = %q, want none", got)
	}
}
