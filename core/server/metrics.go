package server

import (
	"context"
	"errors"
	"sync"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keel-runtime/keel/core/metrics"
	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// newGRPCMetrics are the API's metrics under the names Prometheus users
// graph (grpc_server_handled_total, grpc_server_handling_seconds…), from
// go-grpc-middleware's provider.
func newGRPCMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.0001, 4, 10)),
	))
}

// metricsCollectors are what /metrics exports beside the Go runtime's and
// the process's: the API's, keeld's own, the plugins' and the tasks'.
func (s *Server) metricsCollectors(grpcMetrics *grpcprom.ServerMetrics) []prometheus.Collector {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopMetrics = cancel
	tasks := metrics.NewTasks(ctx, metricsSource{s}, s.events, metrics.TaskOptions{})
	return append(s.keelMetrics.Collectors(), grpcMetrics, pluginCollector{host: s.plugins}, tasks)
}

// metricsSource is keeld's runtimes and records as a scrape reads them.
type metricsSource struct{ s *Server }

// Tasks lists every runtime's tasks at once. The calls are passive: a
// scrape neither starts a runtime nor keeps one running, and a runtime
// stopped for idleness (it has no task) is not asked.
func (m metricsSource) Tasks(ctx context.Context) ([]metrics.Task, error) {
	ctx = pluginhost.Passive(ctx)
	idle := map[string]bool{}
	for _, st := range m.s.plugins.Plugins() {
		if st.Kind == sdk.KindRuntime && st.State == pluginhost.StateIdle {
			idle[st.Name] = true
		}
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		out  []metrics.Task
		errs []error
	)
	for name, rt := range m.s.runtimes {
		if idle[name] {
			continue
		}
		wg.Go(func() {
			list, err := rt.List(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, &metrics.RuntimeError{Runtime: name, Err: err})
				return
			}
			for _, st := range list {
				if ns, id, ok := splitTaskID(st.ID); ok {
					out = append(out, metrics.Task{Namespace: ns, ID: id, Runtime: name, Status: st.Status})
				}
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func (m metricsSource) Stats(ctx context.Context, t metrics.Task) (runtime.Stats, error) {
	rt, err := m.s.runtime(t.Runtime)
	if err != nil {
		return runtime.Stats{}, err
	}
	return rt.Stats(pluginhost.Passive(ctx), t.Namespace+taskIDSep+t.ID)
}

func (m metricsSource) Records(ctx context.Context) (images, containers map[string]int, err error) {
	nss, err := m.s.db.Namespaces().List(ctx)
	if err != nil {
		return nil, nil, err
	}
	images, containers = map[string]int{}, map[string]int{}
	for _, ns := range nss {
		nctx := scope.WithNamespace(ctx, ns.Name)
		imgs, err := m.s.db.Images().List(nctx)
		if err != nil {
			return nil, nil, err
		}
		ctrs, err := m.s.db.Containers().List(nctx)
		if err != nil {
			return nil, nil, err
		}
		images[ns.Name], containers[ns.Name] = len(imgs), len(ctrs)
	}
	return images, containers, nil
}
