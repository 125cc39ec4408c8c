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
