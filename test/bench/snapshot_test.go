package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// Snapshot cycles per b.N: enough samples for a p99 at -benchtime 1x.
const (
	cyclesEmpty  = 200
	cyclesFilled = 60
	parentFiles  = 200
	parentFileSz = 4 << 10
)

// BenchmarkSnapshotCycle measures Prepare+Commit+Remove through keeld on
// the native snapshotter: ops/s of whole cycles and the p50/p99 of each
// call. "empty" prepares on no parent; "parent-200-files" on a committed
// parent of 200 small files, which native copies on every Prepare.
func BenchmarkSnapshotCycle(b *testing.B) {
	ctx := context.Background()
	d, err := startDaemon(ctx, false)
	if err != nil {
		b.Fatal(err)
	}
	defer d.stop()
	b.Logf("keeld root on %s (%s)", d.dir, fsType(d.dir))
	sn := d.client.SnapshotService("")

	b.Run("empty", func(b *testing.B) { snapshotCycles(ctx, b, sn, "", cyclesEmpty*b.N) })
	b.Run(fmt.Sprintf("parent-%d-files", parentFiles), func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("filling the parent snapshot mounts it: needs root")
		}
		if err := filledParent(ctx, sn, "parent", d.dir); err != nil {
			b.Fatal(err)
		}
		snapshotCycles(ctx, b, sn, "parent", cyclesFilled*b.N)
	})
}

// snapshotCycles runs n cycles on parent and reports their figures.
func snapshotCycles(ctx context.Context, b *testing.B, sn snapshot.Snapshotter, parent string, n int) {
	prepare := make([]time.Duration, 0, n)
	commit := make([]time.Duration, 0, n)
	remove := make([]time.Duration, 0, n)
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		key, name := fmt.Sprintf("active-%d", i), fmt.Sprintf("committed-%d", i)
		t0 := time.Now()
		if _, err := sn.Prepare(ctx, key, parent); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := sn.Commit(ctx, name, key); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := sn.Remove(ctx, name); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		prepare = append(prepare, t1.Sub(t0))
		commit = append(commit, t2.Sub(t1))
		remove = append(remove, t3.Sub(t2))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "cycles/s")
	for _, op := range []struct {
		name string
		ds   []time.Duration
	}{{"prepare", prepare}, {"commit", commit}, {"remove", remove}} {
		b.ReportMetric(ms(percentile(op.ds, 50)), op.name+"-p50-ms")
		b.ReportMetric(ms(percentile(op.ds, 99)), op.name+"-p99-ms")
	}
}

// filledParent commits a snapshot named name holding parentFiles files,
// written through its mounts as any user of the snapshotter would.
func filledParent(ctx context.Context, sn snapshot.Snapshotter, name, scratch string) (err error) {
	key := name + "-active"
	ms, err := sn.Prepare(ctx, key, "")
	if err != nil {
		return err
	}
	target, err := os.MkdirTemp(scratch, "mnt-")
	if err != nil {
		return err
	}
	defer os.Remove(target)
	if err := mount.All(ms, target); err != nil {
		return err
	}
	defer func() {
		if uerr := mount.Unmount(target); err == nil {
			err = uerr
		}
	}()
	data := make([]byte, parentFileSz)
	for i := range parentFiles {
		dir := filepath.Join(target, fmt.Sprintf("d%02d", i%20))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		data[0] = byte(i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), data, 0o644); err != nil {
			return err
		}
	}
	if err := mount.Unmount(target); err != nil {
		return err
	}
	if err := sn.Commit(ctx, name, key); err != nil {
		return err
	}
	return nil
}

// percentile is the p-th percentile of ds (nearest rank); ds is sorted.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := (len(ds)*p + 99) / 100
	return ds[max(i-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
