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
	"github.com/keel-runtime/keel/sdk/snapshot/storage"
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

// TestCleanupOrphans plants what crashes leave behind: trees no record
// owns (a Remove cut short, a rebuild cut short). Cleanup removes them and
// nothing else.
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
		filepath.Join(root, "snapshots", "1.rebuild"),
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

// TestRepairMissingTree: a snapshot recorded without its tree (a crash
// inside Prepare in versions before backend, between the record and the
// rename of the copy) gets a fresh copy of its parent at the next start,
// when it is active or a view; a committed one is data lost, and New says
// so.
func TestRepairMissingTree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lose    string // the snapshot whose tree goes
		rebuilt bool   // else New fails with DataLoss
	}{
		{name: "active", lose: "child", rebuilt: true},
		{name: "view", lose: "view", rebuilt: true},
		{name: "committed", lose: "base"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			root := t.TempDir()
			s := open(t, root)
			ms, err := s.Prepare(ctx, "base-a", "")
			if err != nil {
				t.Fatal(err)
			}
			// Write into the base through its directory, as a mount would.
			if err := os.WriteFile(filepath.Join(ms[0].Source, "f"), []byte("parent data"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(ctx, "base", "base-a"); err != nil {
				t.Fatal(err)
			}
			trees := map[string]string{"base": ms[0].Source}
			if ms, err = s.Prepare(ctx, "child", "base"); err != nil {
				t.Fatal(err)
			}
			trees["child"] = ms[0].Source
			if ms, err = s.View(ctx, "view", "base"); err != nil {
				t.Fatal(err)
			}
			trees["view"] = ms[0].Source
			s.Close()
			if err := os.RemoveAll(trees[tc.lose]); err != nil {
				t.Fatal(err)
			}
			s, err = native.New(ctx, sdk.Env{Root: root, Config: []byte(`{}`)})
			if !tc.rebuilt {
				if !errdefs.IsDataLoss(err) {
					t.Fatalf("New over a committed snapshot without its tree: %v, want DataLoss", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			b, err := os.ReadFile(filepath.Join(trees[tc.lose], "f"))
			if err != nil || string(b) != "parent data" {
				t.Fatalf("rebuilt tree: %q, %v", b, err)
			}
			if entries, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(entries) != 3 {
				t.Errorf("snapshots/ holds %v, want the 3 trees", entries)
			}
		})
	}
}

// TestCopyKeepsHoles: a sparse file in the parent stays sparse in the
// copy, so a Prepare does not blow a disk image up to its full size.
func TestCopyKeepsHoles(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	ms, err := s.Prepare(ctx, "base-a", "")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(ms[0].Source, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("end"), 256<<20)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-a"); err != nil {
		t.Fatal(err)
	}
	if ms, err = s.Prepare(ctx, "child", "base"); err != nil {
		t.Fatal(err)
	}
	if f, err = os.Open(filepath.Join(ms[0].Source, "disk.img")); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	n, _ := f.ReadAt(b, 256<<20)
	if st.Size() != 256<<20+3 || string(b[:n]) != "end" {
		t.Fatalf("copied sparse file: size %d, ends %q", st.Size(), b[:n])
	}
	u, err := s.Usage(ctx, "child")
	if err != nil {
		t.Fatal(err)
	}
	if u.Size > 1<<20 {
		t.Errorf("child uses %d bytes for a 256 MiB sparse file: holes filled", u.Size)
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

// TestOlderRoot opens a root as versions before backend left it: records
// made by sdk/snapshot/storage alone, the trees in snapshots/<id>, and a
// tmp/ dir holding a copy a killed plugin was making. The snapshots are
// there as they were, the tmp/ dir is gone.
func TestOlderRoot(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	store, err := storage.Open(filepath.Join(root, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	var base, active storage.Snapshot
	err = store.Update(ctx, func(tx *storage.Tx) (err error) {
		if base, err = tx.Create(snapshot.KindActive, "base-a", ""); err != nil {
			return err
		}
		if _, err = tx.Commit("base-a", "base", snapshot.WithLabels(map[string]string{"l": "v"})); err != nil {
			return err
		}
		active, err = tx.Create(snapshot.KindActive, "child", "base")
		return err
	})
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		filepath.Join(root, "snapshots", base.ID, "f"),
		filepath.Join(root, "snapshots", active.ID, "f"),
		filepath.Join(root, "tmp", "new-123", "f"),
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	s := open(t, root)
	defer s.Close()
	if _, err := os.Stat(filepath.Join(root, "tmp")); !os.IsNotExist(err) {
		t.Errorf("tmp/ after a start: %v", err)
	}
	if info, err := s.Stat(ctx, "base"); err != nil || info.Kind != snapshot.KindCommitted || info.Labels["l"] != "v" {
		t.Errorf("Stat(base) = %+v, %v", info, err)
	}
	ms, err := s.Mounts(ctx, "child")
	if err != nil || ms[0].Source != filepath.Join(root, "snapshots", active.ID) {
		t.Fatalf("Mounts(child) = %v, %v", ms, err)
	}
	// A new snapshot on the old parent copies the old tree.
	ms, err = s.Prepare(ctx, "new", "base")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ms[0].Source, "f")); err != nil || string(b) != filepath.Join(root, "snapshots", base.ID, "f") {
		t.Errorf("new snapshot's copy: %q, %v", b, err)
	}
}
