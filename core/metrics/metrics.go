// Package metrics is what keeld exports to Prometheus beyond the gRPC
// server's metrics: its own keel_* figures (pulls, unpacks, collections,
// plugin calls) and, at each scrape, every task's cgroup metrics under
// containerd's names (Tasks). Nothing here is global: keeld makes one
// Metrics and registers its collectors on its own registry.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/images"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Metrics are keeld's own figures.
type Metrics struct {
	pulls          *prometheus.CounterVec
	pullBytes      prometheus.Counter
	pullDuration   prometheus.Histogram
	unpackDuration prometheus.Histogram
	unpackBytes    prometheus.Histogram
	gcRuns         *prometheus.CounterVec
	gcFreed        prometheus.Counter
	pluginRPC      *prometheus.HistogramVec
}

// New returns keeld's metrics, all zero.
func New() *Metrics {
	return &Metrics{
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_pulls_total",
			Help: "Image pulls keeld served, by result (success or the gRPC code of the failure).",
		}, []string{"result"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keel_pull_bytes_total",
			Help: "Bytes pulls downloaded from registries (blobs already stored are not counted).",
		}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keel_pull_duration_seconds",
			Help:    "Time a pull took, from the call to the image record (or its failure).",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}),
		unpackDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keel_unpack_layer_duration_seconds",
			Help:    "Time a layer took to apply onto its snapshot and commit; a layer applied as it downloads includes its download.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		unpackBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keel_unpack_layer_bytes",
			Help:    "Uncompressed bytes of a layer applied onto its snapshot.",
			Buckets: prometheus.ExponentialBuckets(1<<10, 4, 10),
		}),
		gcRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_gc_runs_total",
			Help: "Garbage collections run (dry runs excluded), by result: success, partial (a plugin delete failed), error.",
		}, []string{"result"}),
		gcFreed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keel_gc_freed_bytes_total",
			Help: "Bytes of content blobs and ingests garbage collection removed.",
		}),
		pluginRPC: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keel_plugin_rpc_duration_seconds",
			Help:    "Time a call from keeld to a plugin took, by plugin and method; a stream's until it is set up.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"kind", "name", "method"}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.pulls, m.pullBytes, m.pullDuration, m.unpackDuration, m.unpackBytes, m.gcRuns, m.gcFreed, m.pluginRPC}
}

// Pull follows one pull; Done ends it.
type Pull struct {
	m     *Metrics
	start time.Time
}

// StartPull begins to follow a pull.
func (m *Metrics) StartPull() *Pull { return &Pull{m: m, start: time.Now()} }

// Progress counts what a pull's progress report says (downloaded blobs,
// unpacked layers), then hands it on to next (when not nil).
func (p *Pull) Progress(next func(images.Progress)) func(images.Progress) {
	return func(pr images.Progress) {
		switch {
		case pr.Blob != nil && pr.Blob.State == images.BlobDone:
			p.m.pullBytes.Add(float64(pr.Blob.Desc.Size - pr.Blob.ResumedFrom))
		case pr.Layer != nil && !pr.Layer.Skipped:
			p.m.unpackDuration.Observe(pr.Layer.Duration.Seconds())
			p.m.unpackBytes.Observe(float64(pr.Layer.Size))
		}
		if next != nil {
			next(pr)
		}
	}
}

// Done counts the pull, which ended with err.
func (p *Pull) Done(err error) {
	result := "success"
	if err != nil {
		// The code the caller gets: keeld's interceptor converts the
		// error the same way after this.
		result = status.Code(errdefs.ToGRPC(err)).String()
	}
	p.m.pulls.WithLabelValues(result).Inc()
	p.m.pullDuration.Observe(time.Since(p.start).Seconds())
}

// GC counts the collections c runs.
func (m *Metrics) GC(c gc.Collector) gc.Collector { return gcCounter{c: c, m: m} }

type gcCounter struct {
	c gc.Collector
	m *Metrics
}

func (g gcCounter) GarbageCollect(ctx context.Context, opts gc.Options) (gc.Report, error) {
	r, err := g.c.GarbageCollect(ctx, opts)
	if opts.DryRun {
		return r, err
	}
	result := "success"
	switch {
	case err != nil:
		result = "error"
	case len(r.Errors) > 0:
		result = "partial"
	}
	g.m.gcRuns.WithLabelValues(result).Inc()
	for _, o := range r.Removed {
		if o.Kind == gc.KindContent || o.Kind == gc.KindIngest {
			g.m.gcFreed.Add(float64(o.Size))
		}
	}
	return r, err
}

// PluginInterceptors time the calls to the plugin kind/name.
func (m *Metrics) PluginInterceptors(kind, name string) []grpc.DialOption {
	observe := func(method string, start time.Time) {
		m.pluginRPC.WithLabelValues(kind, name, method).Observe(time.Since(start).Seconds())
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			defer observe(method, time.Now())
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			defer observe(method, time.Now())
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}
