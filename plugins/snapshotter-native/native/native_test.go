package native_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

func TestConformance(t *testing.T) {
	snapshottest.Run(conformance.Go(t), snapshottest.InProcess(native.New))
}

func open(t *testing.T, root string) snapshot.Snapshotter {
	t.Helper()
	s, err := native.New(context.Background(), sdk.Env{Root: root, Config: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCleanupOrphans plants what crashes leave behind: a tree no record
// owns and leftovers in tmp/. Cleanup removes them and nothing else.
func TestCleanupOrphans(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root)
	defer s.Close()
	if _, err := s.Prepare(ctx, "live", ""); err != nil {
		t.Fatal(err)
	}
	orphans := []string{
		filepath.Join(root, "snapshots", "999"),
		filepath.Join(root, "tmp", "new-123"),
		filepath.Join(root, "tmp", "rm-7"),
	}
	for _, o := range orphans {
		if err := os.MkdirAll(filepath.Join(o, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.(snapshot.Cleaner).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, o := range orphans {
		if _, err := os.Stat(o); !os.IsNotExist(err) {
			t.Errorf("orphan %s survived cleanup: %v", o, err)
		}
	}
	if _, err := s.Mounts(ctx, "live"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(entries) != 1 {
		t.Errorf("snapshots/ holds %d trees, want the live one", len(entries))
	}
}

// TestRepairInterruptedPrepare simulates a crash between recording a
// snapshot and moving its copy into place: reopening rebuilds the tree from
// the parent.
func TestRepairInterruptedPrepare(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root)
	if _, err := s.Prepare(ctx, "base-a", ""); err != nil {
		t.Fatal(err)
	}
	// Write into the base through its directory, as a mount would.
	ms, _ := s.Mounts(ctx, "base-a")
	if err := os.WriteFile(filepath.Join(ms[0].Source, "f"), []byte("parent data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-a"); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Prepare(ctx, "child", "base")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.RemoveAll(ms[0].Source); err != nil {
		t.Fatal(err)
	}
	s = open(t, root)
	defer s.Close()
	b, err := os.ReadFile(filepath.Join(ms[0].Source, "f"))
	if err != nil || string(b) != "parent data" {
		t.Fatalf("rebuilt child tree: %q, %v", b, err)
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	_, err := native.New(context.Background(), sdk.Env{Root: t.TempDir(), Config: []byte(`{"nope": 1}`)})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}

// BenchmarkPrepareBusybox measures Prepare (the copy of the parent) on a
// committed busybox rootfs, in process: the copy without keeld's share.
func BenchmarkPrepareBusybox(b *testing.B) {
	ctx := context.Background()
	s, err := native.New(ctx, sdk.Env{Root: b.TempDir(), Config: []byte(`{}`)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ms, err := s.Prepare(ctx, "busybox-a", "")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fixture.BusyboxRootfs(ms[0].Source); err != nil {
		b.Skip(err)
	}
	if err := s.Commit(ctx, "busybox", "busybox-a"); err != nil {
		b.Fatal(err)
	}
	var prepare []time.Duration
	for i := 0; b.Loop(); i++ {
		key := fmt.Sprintf("active-%d", i)
		t0 := time.Now()
		if _, err := s.Prepare(ctx, key, "busybox"); err != nil {
			b.Fatal(err)
		}
		prepare = append(prepare, time.Since(t0))
		b.StopTimer()
		if err := s.Remove(ctx, key); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(prepare)
	b.ReportMetric(float64(prepare[len(prepare)/2])/float64(time.Millisecond), "prepare-p50-ms")
}

// TestStartSweepsTmp: what a killed plugin was copying in tmp/ is gone
// once the plugin starts again.
func TestStartSweepsTmp(t *testing.T) {
	root := t.TempDir()
	open(t, root).Close()
	left := filepath.Join(root, "tmp", "new-123", "etc")
	if err := os.MkdirAll(left, 0o700); err != nil {
		t.Fatal(err)
	}
	open(t, root).Close()
	if entries, err := os.ReadDir(filepath.Join(root, "tmp")); err != nil || len(entries) != 0 {
		t.Errorf("tmp/ after a start: %v, %v", entries, err)
	}
}
