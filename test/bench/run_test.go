package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// busyboxRegistry starts a loopback registry holding a busybox image
// (registry.BuildImage) and returns it with the image's reference.
func busyboxRegistry(b *testing.B) (*registry.Registry, string) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to run containers")
	}
	reg, err := registry.Start(b, registry.Options{})
	if errors.Is(err, registry.ErrNoRegistry) {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH})
	if err != nil {
		b.Fatal(err)
	}
	if err := reg.PushImage(context.Background(), "bench/busybox", "v1", img); err != nil {
		b.Fatal(err)
	}
	return reg, reg.Host + "/bench/busybox:v1"
}

// busyboxOnBoth starts keeld (default plugins, overlay, and extra config)
// and containerd, each with the busybox image of busyboxRegistry pulled
// onto overlay; both stop when b ends.
func busyboxOnBoth(b *testing.B, extra string) (*daemon, *ctrd, string) {
	return busyboxOnBothWith(b, extra, ctrdOptions{})
}

// busyboxOnBothWith is busyboxOnBoth with containerd started with opts.
func busyboxOnBothWith(b *testing.B, extra string, opts ctrdOptions) (*daemon, *ctrd, string) {
	ctx := context.Background()
	reg, ref := busyboxRegistry(b)
	d, err := startDaemonPlugins(ctx, false, benchSnapshotter{name: "overlay"}, defaultPlugins(reg.Host)+extra)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.stop)
	if _, err := d.keel(ctx, "image", "pull", "-q", ref); err != nil {
		b.Fatal(err)
	}
	c, err := startContainerd(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.stop)
	if _, err := c.ctr(ctx, "images", "pull", "--plain-http", "--snapshotter", "overlayfs", ref); err != nil {
		b.Fatal(err)
	}
	return d, c, ref
}

// runsPerRound is how many sequential containers one round of the
// `run --rm` figure runs on each side; the round's figure is their median.
const runsPerRound = 5

// concurrentRuns is how many `run --rm` the concurrent figure starts at once.
const concurrentRuns = 20

// BenchmarkFigureRun: `run --rm` of busybox `true`, ms, through each
// side's CLI: `keel run --rm --net none IMAGE ID /bin/busybox true` (keeld with the
// default plugins: container record, overlay snapshot, task through
// keel-runtime-runc and its shim, wait, delete) vs `ctr run --rm --seccomp
// --snapshotter overlayfs IMAGE ID /bin/busybox true` (containerd, CRI
// off, containerd-shim-runc-v2), the image pulled beforehand on both. A
// round is the median of runsPerRound runs. The floor is raw `runc run`
// of a bundle whose root is a busybox rootfs directory, running `true`.
// Beside it: 20 such runs at once, containers/s.
func BenchmarkFigureRun(b *testing.B) {
	ctrBins(b)
	runcBin, err := exec.LookPath("runc")
	if err != nil {
		b.Skip("runc not installed")
	}
	d, c, ref := busyboxOnBoth(b, "")

	// The floor: runc run of a bundle whose root is a busybox rootfs.
	work := b.TempDir()
	rootfs := filepath.Join(work, "rootfs")
	if _, err := fixture.BusyboxRootfs(rootfs); err != nil {
		b.Fatal(err)
	}
	bundle := filepath.Join(work, "bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		b.Fatal(err)
	}
	spec := fixture.RuntimeSpec("true")
	spec.Root.Path = rootfs
	spec.Linux.CgroupsPath = "/keel-bench-run/raw"
	js, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), js, 0o644); err != nil {
		b.Fatal(err)
	}

	// run measures one round of a side: runsPerRound sequential runs
	// (their median) and concurrentRuns at once (containers/s).
	run := func(round int, one func(id string) error) ([]float64, error) {
		var seq []float64
		for i := range runsPerRound {
			t, err := timed(func() error { return one(fmt.Sprintf("r%d-seq-%d", round, i)) })
			if err != nil {
				return nil, err
			}
			seq = append(seq, t)
		}
		errs := make(chan error, concurrentRuns)
		t, _ := timed(func() error {
			var wg sync.WaitGroup
			for i := range concurrentRuns {
				wg.Go(func() { errs <- one(fmt.Sprintf("r%d-par-%d", round, i)) })
			}
			wg.Wait()
			return nil
		})
		close(errs)
		for err := range errs {
			if err != nil {
				return nil, err
			}
		}
		return []float64{medianOf(seq), concurrentRuns / (t / 1000)}, nil
	}
	figs := []figure{
		{order: 60, name: "`run --rm` of busybox `true`", unit: "ms", ref: "raw runc run"},
		{order: 61, name: fmt.Sprintf("%d concurrent `run --rm` of busybox `true`", concurrentRuns), unit: "/s"},
	}
	comparePairs(b, figs, sides{
		keel: func(ctx context.Context, round int) ([]float64, error) {
			return run(round, func(id string) error {
				_, err := d.keel(ctx, "run", "--rm", "--net", "none", ref, id, "/bin/busybox", "true")
				return err
			})
		},
		containerd: func(ctx context.Context, round int) ([]float64, error) {
			return run(round, func(id string) error {
				_, err := c.ctr(ctx, "run", "--rm", "--seccomp", "--snapshotter", "overlayfs", ref, id, "/bin/busybox", "true")
				return err
			})
		},
		ref: func(ctx context.Context, round int) ([]float64, error) {
			var raw []float64
			for i := range runsPerRound {
				t, err := timed(func() error {
					out, err := exec.CommandContext(ctx, runcBin, "--root", filepath.Join(work, "runc-root"), "run", "-b", bundle, fmt.Sprintf("raw-%d-%d", round, i)).CombinedOutput()
					if err != nil {
						return fmt.Errorf("runc run: %v: %s", err, out)
					}
					return nil
				})
				if err != nil {
					return nil, err
				}
				raw = append(raw, t)
			}
			return []float64{medianOf(raw), math.NaN()}, nil
		},
	})
}
