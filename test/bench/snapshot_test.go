package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	csnapshots "github.com/containerd/containerd/v2/core/snapshots"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
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

// benchSnapshotter is a snapshotter plugin the snapshot benchmarks run
// through keeld, one keeld each.
type benchSnapshotter struct {
	// name is the instance's name; the executable is keel-snapshotter-<name>.
	name string
	// config is the body of its config block (HCL), may be empty.
	config string
	// prepare, when set, readies the plugin's root dir before keeld starts
	// (e.g. mounts a filesystem there) and returns what undoes it, run
	// after keeld stops.
	prepare func(root string) (undo func(), err error)
}

// benchSnapshotters are the snapshotters measured, each in its own keeld.
// To add one (btrfs: a prepare that mounts a loopback btrfs image at the
// plugin's root), add it here; the benchmarks below run every entry.
var benchSnapshotters = []benchSnapshotter{
	{name: "native"},
	{name: "overlay"},
}

// BenchmarkSnapshotCycle measures Prepare+Commit+Remove through keeld on
// each snapshotter: ops/s of whole cycles and the p50/p99 of each call.
// "empty" prepares on no parent; "parent-200-files" on a committed parent
// of 200 small files, which native copies on every Prepare;
// "busybox-parent" on an unpacked busybox image (see busyboxParent).
func BenchmarkSnapshotCycle(b *testing.B) {
	for _, s := range benchSnapshotters {
		b.Run(s.name, func(b *testing.B) {
			ctx := context.Background()
			d, err := startDaemonWith(ctx, false, s)
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
			b.Run("busybox-parent", func(b *testing.B) {
				if os.Geteuid() != 0 {
					b.Skip("filling the parent snapshot mounts it: needs root")
				}
				if err := busyboxParent(ctx, sn, "busybox", d.dir); err != nil {
					b.Fatal(err)
				}
				snapshotCycles(ctx, b, sn, "busybox", cyclesFilled*b.N)
			})
		})
	}
}

// deepLayers is the depth of BenchmarkSnapshotDeepChain's chain.
const deepLayers = 128

// BenchmarkSnapshotDeepChain builds a chain of 128 committed layers of one
// small file each through keeld, then measures, on each snapshotter, a
// View of the top plus its mount and a read of every file (p50 over a few
// rounds): what starting a container on a deep image costs.
func BenchmarkSnapshotDeepChain(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("mounting snapshots needs root")
	}
	for _, s := range benchSnapshotters {
		b.Run(s.name, func(b *testing.B) {
			ctx := context.Background()
			d, err := startDaemonWith(ctx, false, s)
			if err != nil {
				b.Fatal(err)
			}
			defer d.stop()
			sn := d.client.SnapshotService("")
			target, err := os.MkdirTemp(d.dir, "mnt-")
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			parent := ""
			for i := range deepLayers {
				name := fmt.Sprintf("layer-%03d", i)
				if err := commitFile(ctx, sn, name, parent, target); err != nil {
					b.Fatal(err)
				}
				parent = name
			}
			built := time.Since(start)
			const rounds = 7
			var view, mnt, read []time.Duration
			b.ResetTimer()
			for r := range rounds * b.N {
				t0 := time.Now()
				ms, err := sn.View(ctx, fmt.Sprintf("view-%d", r), parent)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := mount.All(ms, target); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				n, err := readAll(target)
				t3 := time.Now()
				if uerr := mount.Unmount(target); err == nil {
					err = uerr
				}
				if err != nil {
					b.Fatal(err)
				}
				if n != deepLayers {
					b.Fatalf("the view of %d layers shows %d files", deepLayers, n)
				}
				if err := sn.Remove(ctx, fmt.Sprintf("view-%d", r)); err != nil {
					b.Fatal(err)
				}
				view, mnt, read = append(view, t1.Sub(t0)), append(mnt, t2.Sub(t1)), append(read, t3.Sub(t2))
			}
			b.StopTimer()
			b.ReportMetric(ms(built), "build-chain-ms")
			b.ReportMetric(ms(percentile(view, 50)), "view-p50-ms")
			b.ReportMetric(ms(percentile(mnt, 50)), "mount-p50-ms")
			b.ReportMetric(ms(percentile(read, 50)), "read-p50-ms")
		})
	}
}

// commitFile commits name on parent holding one more file, name, written
// through the mounts on target.
func commitFile(ctx context.Context, sn snapshot.Snapshotter, name, parent, target string) error {
	ms, err := sn.Prepare(ctx, name+"-active", parent)
	if err != nil {
		return err
	}
	if err := mount.All(ms, target); err != nil {
		return err
	}
	err = os.WriteFile(filepath.Join(target, name), []byte(name), 0o644)
	if uerr := mount.Unmount(target); err == nil {
		err = uerr
	}
	if err != nil {
		return err
	}
	return sn.Commit(ctx, name, name+"-active")
}

// readAll reads every file in dir and returns how many there are.
func readAll(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if _, err := os.ReadFile(filepath.Join(dir, e.Name())); err != nil {
			return 0, err
		}
	}
	return len(entries), nil
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
	if made, err := exists(ctx, sn, name); made || err != nil {
		return err
	}
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

// busyboxApplets is how many entries /bin of busyboxParent holds: about
// what upstream's busybox image has (Debian's busybox lists fewer applets,
// the rest are topped up with more links).
const busyboxApplets = 400

// busyboxParent commits a snapshot named name holding what an unpacked
// busybox image does: a 2 MB static busybox, a symlink per applet in /bin
// and the usual empty dirs, written through its mounts.
func busyboxParent(ctx context.Context, sn snapshot.Snapshotter, name, scratch string) (err error) {
	if made, err := exists(ctx, sn, name); made || err != nil {
		return err
	}
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
	if _, err := fixture.BusyboxRootfs(target); err != nil {
		return err
	}
	links, err := os.ReadDir(filepath.Join(target, "bin"))
	if err != nil {
		return err
	}
	for i := len(links); i < busyboxApplets; i++ {
		if err := os.Symlink("busybox", filepath.Join(target, "bin", fmt.Sprintf("applet-%03d", i))); err != nil {
			return err
		}
	}
	if err := mount.Unmount(target); err != nil {
		return err
	}
	return sn.Commit(ctx, name, key)
}

// exists tells whether the snapshot name is there already: -count > 1
// reruns a sub-benchmark on the same keeld, whose parent is made.
func exists(ctx context.Context, sn snapshot.Snapshotter, name string) (bool, error) {
	_, err := sn.Stat(ctx, name)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
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

// figureCycles is how many Prepare+Commit+Remove cycles one round of
// BenchmarkFigureSnapshot runs on each side.
const figureCycles = 100

// BenchmarkFigureSnapshot: snapshot Prepare+Commit+Remove through the
// API, overlay and native, ms per cycle. One cycle is Prepare(key, no
// parent), Commit(name, key), Remove(name), each call a round trip through
// the daemon's API: keel's client library to keeld and the snapshotter
// plugin (keel-snapshotter-overlay, -native; one keeld each), containerd's
// snapshot proxy to containerd's overlayfs and native snapshotters. A
// round is the mean of figureCycles cycles.
func BenchmarkFigureSnapshot(b *testing.B) {
	ctrBins(b)
	ctx := context.Background()
	c, err := startContainerd(ctx, ctrdOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.stop()
	type pair struct {
		keel       snapshot.Snapshotter
		containerd csnapshots.Snapshotter
	}
	var pairs []pair
	for _, names := range [][2]string{{"overlay", "overlayfs"}, {"native", "native"}} {
		d, err := startDaemonWith(ctx, false, benchSnapshotter{name: names[0]})
		if err != nil {
			b.Fatal(err)
		}
		defer d.stop()
		pairs = append(pairs, pair{d.client.SnapshotService(""), c.snapshotter(names[1])})
	}
	figs := []figure{
		{order: 50, name: "snapshot Prepare+Commit+Remove through the API, overlay", unit: "ms"},
		{order: 51, name: "snapshot Prepare+Commit+Remove through the API, native", unit: "ms"},
	}
	comparePairs(b, figs, sides{
		keel: func(ctx context.Context, round int) ([]float64, error) {
			var out []float64
			for _, p := range pairs {
				m, err := meanCycle(round, func(key, name string) error {
					if _, err := p.keel.Prepare(ctx, key, ""); err != nil {
						return err
					}
					if err := p.keel.Commit(ctx, name, key); err != nil {
						return err
					}
					return p.keel.Remove(ctx, name)
				})
				if err != nil {
					return nil, err
				}
				out = append(out, m)
			}
			return out, nil
		},
		containerd: func(_ context.Context, round int) ([]float64, error) {
			ctx := c.ctx
			var out []float64
			for _, p := range pairs {
				m, err := meanCycle(round, func(key, name string) error {
					if _, err := p.containerd.Prepare(ctx, key, ""); err != nil {
						return err
					}
					if err := p.containerd.Commit(ctx, name, key); err != nil {
						return err
					}
					return p.containerd.Remove(ctx, name)
				})
				if err != nil {
					return nil, err
				}
				out = append(out, m)
			}
			return out, nil
		},
	})
}

// meanCycle runs figureCycles cycles, each with a fresh key and name, and
// returns their mean duration in ms.
func meanCycle(round int, cycle func(key, name string) error) (float64, error) {
	syncDisks()
	start := time.Now()
	for i := range figureCycles {
		if err := cycle(fmt.Sprintf("r%d-active-%d", round, i), fmt.Sprintf("r%d-committed-%d", round, i)); err != nil {
			return 0, err
		}
	}
	return ms(time.Since(start)) / figureCycles, nil
}
