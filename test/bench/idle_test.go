package bench

import (
	"context"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk"
)

// BenchmarkPluginStartOnDemand: what the first call to a plugin stopped
// for idleness costs. keeld runs the runc runtime with idle_stop "1s";
// each round waits until keeld has stopped it, then times a task list
// (keel's API → the runtime's List) that starts it — launch, handshake,
// Configure — and the same call again on the running plugin. It reports
// the medians of both and of their difference, ms; it asserts nothing.
func BenchmarkPluginStartOnDemand(b *testing.B) {
	ctx := context.Background()
	d, err := startDaemonPlugins(ctx, false, benchSnapshotter{name: "native"}, `
plugin "runtime" "runc" {
  path      = "keel-runtime-runc"
  idle_stop = "1s"
  config { cgroup_parent = "/keel-bench" }
}
`)
	if err != nil {
		b.Fatal(err)
	}
	defer d.stop()
	others := func(p client.Plugin) bool { return p.Kind != sdk.KindRuntime }
	var cold, warm, extra []float64
	for range max(benchRounds(b), 5) {
		if err := waitIdle(ctx, d, others); err != nil {
			b.Fatal(err)
		}
		var took [2]time.Duration
		for i := range took {
			began := time.Now()
			if _, err := d.client.Tasks(ctx); err != nil {
				b.Fatal(err)
			}
			took[i] = time.Since(began)
		}
		cold = append(cold, ms(took[0]))
		warm = append(warm, ms(took[1]))
		extra = append(extra, ms(took[0]-took[1]))
	}
	b.Logf("task list with the runtime stopped (started on demand): %.1f ms; running: %.1f ms; the start costs %.1f ms (medians of %d)",
		medianOf(cold), medianOf(warm), medianOf(extra), len(cold))
	b.ReportMetric(medianOf(cold), "cold-ms")
	b.ReportMetric(medianOf(warm), "warm-ms")
}
