package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// BenchmarkKeelRun measures, for a busybox image pulled from a loopback
// registry onto overlay:
//   - `keel run --rm IMAGE id /bin/busybox true`, the CLI end to end
//     (container record, snapshot, task, wait, delete), median latency;
//   - raw `runc run` of a busybox bundle running true (the floor);
//   - 20 `keel run --rm` at once, containers/s.
//
// (containerd's `ctr run --rm` is not run side by side yet.)
func BenchmarkKeelRun(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to run containers")
	}
	runcBin, err := exec.LookPath("runc")
	if err != nil {
		b.Skip("runc not installed")
	}
	ctx := context.Background()
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
	if err := reg.PushImage(ctx, "bench/busybox", "v1", img); err != nil {
		b.Fatal(err)
	}
	plugins := fmt.Sprintf(`plugin "resolver" "docker" {
  path = "keel-resolver-docker"
  config {
    host %q { plain_http = true }
  }
}
plugin "runtime" "runc" {
  path = "keel-runtime-runc"
  config { cgroup_parent = "/keel-bench-run" }
}
`, reg.Host)
	d, err := startDaemonPlugins(ctx, false, benchSnapshotter{name: "overlay"}, plugins)
	if err != nil {
		b.Fatal(err)
	}
	defer d.stop()
	ref := reg.Host + "/bench/busybox:v1"
	c := d.client
	if _, err := c.Pull(client.WithNamespaceContext(ctx, namespace), ref, client.WithPullUnpack); err != nil {
		b.Fatal(err)
	}
	bin, err := binDir()
	if err != nil {
		b.Fatal(err)
	}
	keelRun := func(id string) error {
		out, err := exec.Command(filepath.Join(bin, "keel"), "--address", d.socket(), "-n", namespace,
			"run", "--rm", ref, id, "/bin/busybox", "true").CombinedOutput()
		if err != nil {
			return fmt.Errorf("keel run %s: %v: %s", id, err, out)
		}
		return nil
	}

	// The floor: runc run of a bundle whose root is a busybox rootfs.
	work := b.TempDir()
	rootfs := filepath.Join(work, "rootfs")
	if _, err := fixture.BusyboxRootfs(rootfs); err != nil {
		b.Fatal(err)
	}
	bundle := filepath.Join(work, "bundle")
	os.MkdirAll(bundle, 0o755)
	spec := fixture.RuntimeSpec("true")
	spec.Root.Path = rootfs
	spec.Linux.CgroupsPath = "/keel-bench-run/raw"
	js, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(bundle, "config.json"), js, 0o644)
	var raw, keel []time.Duration
	for i := range runtimeRuns {
		start := time.Now()
		out, err := exec.Command(runcBin, "--root", filepath.Join(work, "runc-root"), "run", "-b", bundle, fmt.Sprintf("raw-%d", i)).CombinedOutput()
		if err != nil {
			b.Fatalf("runc run: %v: %s", err, out)
		}
		raw = append(raw, time.Since(start))
	}
	b.ResetTimer()
	for i := range runtimeRuns {
		start := time.Now()
		if err := keelRun(fmt.Sprintf("seq-%d", i)); err != nil {
			b.Fatal(err)
		}
		keel = append(keel, time.Since(start))
	}

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			if err := keelRun(fmt.Sprintf("par-%d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.StopTimer()
	rawMs, keelMs := ms(medianOf(raw)), ms(medianOf(keel))
	b.ReportMetric(rawMs, "runc-run-ms")
	b.ReportMetric(keelMs, "keel-run-ms")
	b.ReportMetric(float64(n)/took.Seconds(), "concurrent-containers/s")
	b.Logf("runc run %.1f ms; keel run --rm %.1f ms (+%.1f ms); %d concurrent keel run --rm: %.1f containers/s",
		rawMs, keelMs, keelMs-rawMs, n, float64(n)/took.Seconds())
}
