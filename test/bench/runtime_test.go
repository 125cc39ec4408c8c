package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/host"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// runtimeRuns is how many sequential containers each latency figure is
// the median of.
const runtimeRuns = 15

// BenchmarkRuntimeRunc compares, on one busybox rootfs:
//   - raw `runc run` of a bundle running `true` (the floor);
//   - create+start+wait+delete of the same through keel-runtime-runc,
//     launched as keeld launches it (host.Launch), median latency;
//   - 20 such tasks at once, tasks/s;
//   - PSS per shim with 20 tasks alive (containerd-shim-runc-v2 is about
//     3.0 MB PSS with 20 alive on this machine kind).
func BenchmarkRuntimeRunc(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to run containers")
	}
	runcBin, err := exec.LookPath("runc")
	if err != nil {
		b.Skip("runc not installed")
	}
	dir, err := binDir()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	work := b.TempDir()
	rootfs := filepath.Join(work, "rootfs")
	mounts, err := fixture.BusyboxRootfs(rootfs)
	if err != nil {
		b.Fatal(err)
	}

	// The floor: runc run of a bundle whose root is the rootfs itself.
	bundle := filepath.Join(work, "bundle")
	os.MkdirAll(bundle, 0o755)
	spec := fixture.RuntimeSpec("true")
	spec.Root.Path = rootfs
	spec.Linux.CgroupsPath = "/keel-bench/raw"
	js, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(bundle, "config.json"), js, 0o644)
	runcRoot := filepath.Join(work, "runc-root")
	var raw []time.Duration
	for i := range runtimeRuns {
		start := time.Now()
		out, err := exec.Command(runcBin, "--root", runcRoot, "run", "-b", bundle, fmt.Sprintf("raw-%d", i)).CombinedOutput()
		if err != nil {
			b.Fatalf("runc run: %v: %s", err, out)
		}
		raw = append(raw, time.Since(start))
	}

	state, err := os.MkdirTemp("", "keel-bench-rt-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(state)
	proc, err := host.Launch(ctx, host.LaunchConfig{
		Path: filepath.Join(dir, "keel-runtime-runc"), Kind: sdk.KindRuntime,
		Instance: "runtime.runc", Logger: hclog.NewNullLogger(), SocketDir: state,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer proc.Kill()
	if _, err := proc.Configure(ctx, b.TempDir(), state, []byte(`{"cgroup_parent":"/keel-bench"}`)); err != nil {
		b.Fatal(err)
	}
	rt := keelruntime.NewClient(proc.Conn())

	cycle := func(id string) error {
		if _, err := rt.Create(ctx, keelruntime.CreateOpts{ID: id, Spec: fixture.RuntimeSpec("true"), Rootfs: mounts}); err != nil {
			return err
		}
		if _, err := rt.Start(ctx, id, ""); err != nil {
			return err
		}
		if _, err := rt.Wait(ctx, id, ""); err != nil {
			return err
		}
		_, err := rt.Delete(ctx, id, "")
		return err
	}
	var keel []time.Duration
	for i := range runtimeRuns {
		start := time.Now()
		if err := cycle(fmt.Sprintf("seq-%d", i)); err != nil {
			b.Fatal(err)
		}
		keel = append(keel, time.Since(start))
	}

	const concurrent = 20
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, concurrent)
	for i := range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- cycle(fmt.Sprintf("par-%d", i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	perSec := concurrent / time.Since(start).Seconds()

	// 20 tasks alive: PSS of each shim.
	for i := range concurrent {
		id := fmt.Sprintf("live-%d", i)
		if _, err := rt.Create(ctx, keelruntime.CreateOpts{ID: id, Spec: fixture.RuntimeSpec("sleep", "600"), Rootfs: mounts}); err != nil {
			b.Fatal(err)
		}
		defer func() {
			rt.Kill(ctx, id, "", 9, true)
			rt.Wait(ctx, id, "")
			rt.Delete(ctx, id, "")
		}()
		if _, err := rt.Start(ctx, id, ""); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(settle)
	var pss, anon int64
	for i := range concurrent {
		pb, err := os.ReadFile(filepath.Join(state, "tasks", fmt.Sprintf("live-%d", i), "shim.pid"))
		if err != nil {
			b.Fatal(err)
		}
		pid, _ := strconv.Atoi(string(pb))
		m, err := readMemory(pid)
		if err != nil {
			b.Fatal(err)
		}
		pss += m.pss
		anon += m.anon
	}
	rawMed, keelMed := medianOf(raw), medianOf(keel)
	b.ReportMetric(ms(rawMed), "runc-run-ms")
	b.ReportMetric(ms(keelMed), "keel-cycle-ms")
	b.ReportMetric(perSec, "tasks/s-20-concurrent")
	b.ReportMetric(mb(pss/concurrent), "pss-per-shim-MB")
	b.ReportMetric(mb(anon/concurrent), "pss-anon-per-shim-MB")
	b.Logf("runc run %.1f ms; keel create+start+wait+delete %.1f ms (+%.1f ms); 20 concurrent %.1f tasks/s; shim PSS %.2f MB (anon %.2f) with 20 alive",
		ms(rawMed), ms(keelMed), ms(keelMed-rawMed), perSec, mb(pss/concurrent), mb(anon/concurrent))
}
