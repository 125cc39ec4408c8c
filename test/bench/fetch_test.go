package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// fetchSize is the size of the blob BenchmarkRegistryFetch moves.
const fetchSize = 512 << 20

// BenchmarkRegistryFetch fetches a 512 MiB blob from a loopback registry
// (Debian's docker-registry) through the docker resolver plugin and keeld
// into the local content store, with keeld's Transfer.Fetch: MB/s is the
// whole fetch, commit (fsync) included. curl-MB/s is the same blob read by
// curl from the registry, the ceiling of the registry and loopback; the
// CPU seconds per process (registry, resolver.docker, keeld, content.local)
// say where the fetch's time goes.
func BenchmarkRegistryFetch(b *testing.B) {
	ctx := context.Background()
	reg, err := registry.Start(b, registry.Options{})
	if errors.Is(err, registry.ErrNoRegistry) {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	block := randomBlock()
	data := bytes.Repeat(block, fetchSize/blockSize)
	blob := registry.NewBlob(ocispec.MediaTypeImageLayer, data)
	const repo = "bench/blob"
	if err := reg.PutBlob(ctx, repo, blob); err != nil {
		b.Fatal(err)
	}
	data, blob.Data = nil, nil
	desc := blob.Desc

	plugin := fmt.Sprintf(`plugin "resolver" "docker" {
  path = "keel-resolver-docker"
  config {
    host %q { plain_http = true }
  }
}
`, reg.Host)
	d, err := startDaemonPlugins(ctx, false, benchSnapshotter{name: "native"}, plugin)
	if err != nil {
		b.Fatal(err)
	}
	defer d.stop()
	b.Logf("keeld root on %s (%s)", d.dir, fsType(d.dir))

	// The ceiling: curl from the registry to /dev/null (warms its page
	// cache too).
	regPid := strconv.Itoa(reg.Pid())
	regBefore, err := cpuTime(regPid)
	if err != nil {
		b.Fatal(err)
	}
	curl, err := curlSpeed(ctx, reg.URL()+"/v2/"+repo+"/blobs/"+desc.Digest.String())
	if err != nil {
		b.Fatal(err)
	}
	regAfter, err := cpuTime(regPid)
	if err != nil {
		b.Fatal(err)
	}

	ref := reg.Host + "/" + repo + ":latest"
	// A benchmark with sub-benchmarks prints no line of its own, and
	// ResetTimer drops reported metrics: each reports the ceiling after.
	ceiling := func(b *testing.B) {
		b.ReportMetric(curl/1e6, "curl-MB/s")
		b.ReportMetric((regAfter - regBefore).Seconds(), "curl-registry-cpu-s")
	}
	b.Run("content", func(b *testing.B) {
		cs := d.client.ContentStore()
		measureFetch(ctx, b, d, regPid, func() error {
			// Each round fetches afresh: a stored blob is not fetched again.
			if err := cs.Delete(ctx, desc.Digest); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			return nil
		}, func() error {
			res, err := d.client.Fetch(ctx, ref, desc)
			if err == nil && res.ResumedFrom != 0 {
				err = fmt.Errorf("fetch resumed from %d: an ingest was left", res.ResumedFrom)
			}
			return err
		})
		if info, err := cs.Info(ctx, desc.Digest); err != nil || info.Size != fetchSize {
			b.Fatalf("fetched blob: %+v, %v", info, err)
		}
		ceiling(b)
	})
	// The same through keeld's Resolver service to this process, which
	// discards it: the registry, the plugin and keeld's relay without the
	// content store.
	b.Run("relay", func(b *testing.B) {
		r := d.client.ResolverService("")
		measureFetch(ctx, b, d, regPid, nil, func() error {
			rc, err := r.Fetch(ctx, ref, desc, 0)
			if err != nil {
				return err
			}
			defer rc.Close()
			n, err := io.Copy(io.Discard, rc)
			if err == nil && n != fetchSize {
				err = fmt.Errorf("read %d bytes of %d", n, fetchSize)
			}
			return err
		})
		ceiling(b)
	})
}

// measureFetch runs fetch b.N times, prepare before each outside the
// timer, and reports the CPU seconds per round of each process.
func measureFetch(ctx context.Context, b *testing.B, d *daemon, regPid string, prepare, fetch func() error) {
	b.SetBytes(fetchSize)
	var before, after cpuSample
	sample := func() cpuSample {
		s, err := d.cpu(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if s["registry"], err = cpuTime(regPid); err != nil {
			b.Fatal(err)
		}
		return s
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if prepare != nil {
			if err := prepare(); err != nil {
				b.Fatal(err)
			}
		}
		s := sample()
		b.StartTimer()
		if err := fetch(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		before, after = addSample(before, s, -1), addSample(after, sample(), 1)
	}
	for name, t := range after {
		b.ReportMetric((t+before[name]).Seconds()/float64(b.N), name+"-cpu-s")
	}
}

// addSample adds sign times s into sum, per process.
func addSample(sum, s cpuSample, sign time.Duration) cpuSample {
	if sum == nil {
		sum = cpuSample{}
	}
	for k, v := range s {
		sum[k] += sign * v
	}
	return sum
}

// curlSpeed is curl's average download speed of url, in bytes per second.
func curlSpeed(ctx context.Context, url string) (float64, error) {
	out, err := exec.CommandContext(ctx, "curl", "-sSf", "-o", "/dev/null", "-w", "%{speed_download}", url).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return 0, fmt.Errorf("curl %s: %v: %s", url, err, exit.Stderr)
		}
		return 0, fmt.Errorf("curl (apt-get install curl): %w", err)
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}
