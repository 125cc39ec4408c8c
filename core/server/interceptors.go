package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/core/scope"
)

// logUnary logs each call's failure once, at the edge, at Debug: the error
// also goes back to the caller, who decides whether it matters. At Trace it
// logs every call with its duration.
func (s *Server) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	if err != nil {
		s.logCall(ctx, info.FullMethod, err)
	}
	if s.logger.IsTrace() {
		s.logger.Trace("call", "method", info.FullMethod, "took", time.Since(start))
	}
	return resp, err
}

func (s *Server) logStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if err != nil {
		s.logCall(ss.Context(), info.FullMethod, err)
	}
	return err
}

func (s *Server) logCall(ctx context.Context, method string, err error) {
	ns, _ := scope.Namespace(ctx)
	s.logger.Debug("call failed", "method", method, "namespace", ns, "code", status.Code(err).String(), "error", err)
}

// grpcMetrics counts and times keeld's API calls.
type grpcMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newGRPCMetrics() *grpcMetrics {
	return &grpcMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_grpc_requests_total",
			Help: "API calls served by keeld, by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keel_grpc_request_duration_seconds",
			Help:    "Time keeld took to serve an API call.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"method"}),
	}
}

func (m *grpcMetrics) observe(method string, start time.Time, err error) {
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (m *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}

// pluginCollector reports each plugin's state from the host at scrape time.
type pluginCollector struct {
	host *pluginhost.Host
}

var (
	pluginUpDesc = prometheus.NewDesc("keel_plugin_up",
		"1 when the plugin process is running and configured.", []string{"kind", "name"}, nil)
	pluginRestartsDesc = prometheus.NewDesc("keel_plugin_restarts_total",
		"Restarts of the plugin since keeld started; starts after an idle stop are none.", []string{"kind", "name"}, nil)
	pluginIdleDesc = prometheus.NewDesc("keel_plugin_idle",
		"1 when the plugin is stopped for idleness (or not started yet, lazy_start): its next call starts it.", []string{"kind", "name"}, nil)
)

func (c pluginCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pluginUpDesc
	ch <- pluginRestartsDesc
	ch <- pluginIdleDesc
}

func (c pluginCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.host.Plugins() {
		up := 0.0
		if st.State == pluginhost.StateRunning {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(pluginUpDesc, prometheus.GaugeValue, up, st.Kind, st.Name)
		ch <- prometheus.MustNewConstMetric(pluginRestartsDesc, prometheus.CounterValue, float64(st.Restarts), st.Kind, st.Name)
		idle := 0.0
		if st.State == pluginhost.StateIdle {
			idle = 1
		}
		ch <- prometheus.MustNewConstMetric(pluginIdleDesc, prometheus.GaugeValue, idle, st.Kind, st.Name)
	}
}
