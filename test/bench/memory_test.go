package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// settle is how long an idle daemon is left alone before its memory is read.
const settle = 3 * time.Second

// BenchmarkIdleMemory reports the proportional set size of a fresh, idle
// keeld and of each of its plugin processes, after one call of each kind
// has warmed them up. containerd 1.6's daemon alone is about 37 MB.
func BenchmarkIdleMemory(b *testing.B) {
	ctx := context.Background()
	d, err := startDaemon(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer d.stop()
	if err := warmUp(ctx, d); err != nil {
		b.Fatal(err)
	}
	time.Sleep(settle)
	ps, err := d.procs(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var total int64
	var parts []string
	for _, p := range ps {
		n, err := pss(p.pid)
		if err != nil {
			b.Fatal(err)
		}
		total += n
		b.ReportMetric(mb(n), "pss-"+p.name+"-MB")
		parts = append(parts, fmt.Sprintf("%s %.1f MB", p.name, mb(n)))
	}
	b.ReportMetric(mb(total), "pss-total-MB")
	b.Logf("idle PSS: %s; total %.1f MB (containerd 1.6 daemon: ~37 MB)", strings.Join(parts, ", "), mb(total))
}

// warmUp makes one call of each kind, so every process has served a request.
func warmUp(ctx context.Context, d *daemon) error {
	if _, err := d.client.Version(ctx); err != nil {
		return err
	}
	if _, err := d.client.ContentStore().Info(ctx, "sha256:0000000000000000000000000000000000000000000000000000000000000000"); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	sn := d.client.SnapshotService("")
	if _, err := sn.Prepare(ctx, "warm-up", ""); err != nil {
		return err
	}
	return sn.Remove(ctx, "warm-up")
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
