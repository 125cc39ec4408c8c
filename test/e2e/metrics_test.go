package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsKeeld is a runKeeld (busybox in its registry, not pulled yet)
// serving /metrics on a free loopback port; it returns the metrics URL.
func metricsKeeld(t *testing.T) (*runKeeld, string) {
	t.Helper()
	addr := deadAddr(t) // free now, for keeld to listen on
	k := newRunKeeld(t, "", fmt.Sprintf("metrics {\n  address = %q\n}\n", addr))
	return k, "http://" + addr + "/metrics"
}

// scrape is one parsed /metrics page.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics GETs url and parses it with Prometheus's text parser.
func scrapeMetrics(t testing.TB, url string) scrape {
	t.Helper()
	c := &http.Client{Timeout: settle}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return fams
}

// labels are a metric's labels as a map.
func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value is the value of family name's first metric with the labels of
// match (a histogram's: its sample count); false when there is none.
func (s scrape) value(name string, match map[string]string) (float64, bool) {
	for _, m := range s[name].GetMetric() {
		ls := labels(m)
		ok := true
		for k, v := range match {
			ok = ok && ls[k] == v
		}
		if !ok {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

// containerFamilies are the container_* families of task id.
func (s scrape) containerFamilies(id string) map[string]*dto.MetricFamily {
	out := map[string]*dto.MetricFamily{}
	for name, f := range s {
		if !strings.HasPrefix(name, "container_") {
			continue
		}
		for _, m := range f.GetMetric() {
			if labels(m)["container_id"] == id {
				out[name] = f
				break
			}
		}
	}
	return out
}

// containerdV1Names reads the names containerd exports on cgroup v1 here.
func containerdV1Names(t *testing.T) []string {
	f, err := os.Open("testdata/containerd-1.6.20-cgroup-v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			names = append(names, line)
		}
	}
	return names
}

// TestMetrics: /metrics, scraped and parsed as Prometheus does, has a
// running task's cgroup metrics under containerd's names, types and
// labels, figures that move when the task works, the API's gRPC metrics,
// the pull's and the records' gauges.
func TestMetrics(t *testing.T) {
	t.Parallel()
	k, url := metricsKeeld(t)
	before := scrapeMetrics(t, url)
	if n, _ := before.value("keel_pulls_total", map[string]string{"result": "success"}); n != 0 {
		t.Errorf("pulls before any: %v", n)
	}
	k.ok("image", "pull", "-q", "--snapshotter", "overlay", k.ref)
	k.ok("run", "-d", "--snapshotter", "overlay", k.ref, "busy", "/bin/busybox", "sleep", "100000")

	s := scrapeMetrics(t, url)
	for _, c := range []struct {
		name  string
		match map[string]string
		min   float64
	}{
		{"keel_pulls_total", map[string]string{"result": "success"}, 1},
		{"keel_pull_bytes_total", nil, 1},
		{"keel_pull_duration_seconds", nil, 1},
		{"keel_unpack_layer_duration_seconds", nil, 1},
		{"keel_unpack_layer_bytes", nil, 1},
		{"keel_images", map[string]string{"namespace": "default"}, 1},
		{"keel_containers", map[string]string{"namespace": "default"}, 1},
		{"keel_tasks", map[string]string{"namespace": "default", "runtime": "runc", "state": "running"}, 1},
		{"keel_plugin_up", map[string]string{"kind": "runtime", "name": "runc"}, 1},
		{"keel_plugin_rpc_duration_seconds", map[string]string{"kind": "runtime", "name": "runc", "method": "/keel.plugin.v1.Runtime/Create"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_service": "keel.v1.Transfer", "grpc_method": "Pull", "grpc_code": "OK"}, 1},
		{"grpc_server_started_total", map[string]string{"grpc_service": "keel.v1.Transfer", "grpc_method": "Pull"}, 1},
		{"grpc_server_msg_sent_total", map[string]string{"grpc_service": "keel.v1.Transfer", "grpc_method": "Pull"}, 1},
		{"grpc_server_msg_received_total", map[string]string{"grpc_service": "keel.v1.Transfer", "grpc_method": "Pull"}, 1},
		{"grpc_server_handling_seconds", map[string]string{"grpc_service": "keel.v1.Transfer", "grpc_method": "Pull"}, 1},
	} {
		if v, ok := s.value(c.name, c.match); !ok || v < c.min {
			t.Errorf("%s%v: %v (present %v), want at least %v", c.name, c.match, v, ok, c.min)
		}
	}
	for name, f := range s {
		if f.GetHelp() == "" {
			t.Errorf("%s: no HELP", name)
		}
	}

	// containerd's names, exactly: what it exports here, plus blkio and
	// hugetlb where the cgroup has them, plus the OOM count.
	fams := s.containerFamilies("busy")
	want := append(containerdV1Names(t), "container_memory_oom_total")
	for _, name := range want {
		if fams[name] == nil {
			t.Errorf("%s: missing", name)
		}
	}
	for name, f := range fams {
		if !slices.Contains(want, name) && !strings.HasPrefix(name, "container_blkio_") && !strings.HasPrefix(name, "container_hugetlb_") {
			t.Errorf("%s: not a name containerd exports", name)
		}
		wantType := dto.MetricType_GAUGE
		if name == "container_memory_oom_total" {
			wantType = dto.MetricType_COUNTER
		}
		if f.GetType() != wantType {
			t.Errorf("%s: type %v, want %v", name, f.GetType(), wantType)
		}
		for _, m := range f.GetMetric() {
			ls := labels(m)
			if ls["container_id"] != "busy" {
				continue
			}
			// containerd's runtime label (the task's runtime) on all
			// but the OOM count, as containerd's OOM collector.
			wantRuntime := "runc"
			if name == "container_memory_oom_total" {
				wantRuntime = ""
			}
			if ls["namespace"] != "default" || ls["runtime"] != wantRuntime {
				t.Errorf("%s: labels %v, want namespace default, runtime %q", name, ls, wantRuntime)
			}
			var own []string
			for l := range ls {
				if l != "container_id" && l != "namespace" && l != "runtime" {
					own = append(own, l)
				}
			}
			slices.Sort(own)
			wantOwn := map[string][]string{"container_per_cpu_nanoseconds": {"cpu"}}[name]
			switch {
			case strings.HasPrefix(name, "container_blkio_"):
				wantOwn = []string{"device", "major", "minor", "op"}
			case strings.HasPrefix(name, "container_hugetlb_"):
				wantOwn = []string{"page"}
			}
			if !slices.Equal(own, wantOwn) {
				t.Errorf("%s: own labels %v, want %v", name, own, wantOwn)
			}
		}
	}
	for _, name := range []string{"container_blkio_io_service_bytes_recursive_bytes", "container_blkio_io_serviced_recursive_total"} {
		if fams[name] != nil && fams[name].GetHelp() == "" {
			t.Errorf("%s: no help", name)
		}
	}

	// The figures move when the task works: CPU burnt and 32 MiB of file
	// pages in the task's cgroup.
	busy := map[string]string{"container_id": "busy", "namespace": "default"}
	cpu0, _ := s.value("container_cpu_total_nanoseconds", busy)
	mem0, _ := s.value("container_memory_usage_usage_bytes", busy)
	k.ok("task", "exec", "busy", "sh", "-c", "head -c 20000000 /dev/urandom | md5sum && head -c 33554432 /dev/zero > /fill")
	eventually(t, settle, "cpu and memory figures move", func() error {
		s := scrapeMetrics(t, url)
		cpu, _ := s.value("container_cpu_total_nanoseconds", busy)
		mem, _ := s.value("container_memory_usage_usage_bytes", busy)
		if cpu <= cpu0 || mem < mem0+16<<20 {
			return fmt.Errorf("cpu %v -> %v ns, memory %v -> %v bytes", cpu0, cpu, mem0, mem)
		}
		// The scrapes before this one asked for the task's stats.
		stats := map[string]string{"kind": "runtime", "name": "runc", "method": "/keel.plugin.v1.Runtime/Stats"}
		if n, _ := s.value("keel_plugin_rpc_duration_seconds", stats); n < 1 {
			return fmt.Errorf("keel_plugin_rpc_duration_seconds%v: %v", stats, n)
		}
		return nil
	})

	// keel task metrics prints the same figures.
	var samples []struct {
		Name   string `json:"name"`
		Labels []struct {
			Name, Value string
		} `json:"labels"`
		Value float64 `json:"value"`
	}
	k.okJSON(&samples, "task", "metrics", "busy")
	var names []string
	for _, s := range samples {
		if s.Labels[0].Value != "busy" || s.Labels[1].Value != "default" {
			t.Errorf("task metrics: %s labelled %v", s.Name, s.Labels)
		}
		names = append(names, s.Name)
	}
	for _, name := range containerdV1Names(t) {
		if !slices.Contains(names, name) {
			t.Errorf("task metrics: %s missing", name)
		}
	}
	table := k.ok("task", "metrics", "busy")
	if !regexp.MustCompile(`(?m)^container_per_cpu_nanoseconds +cpu="0" +[0-9]+$`).MatchString(table) {
		t.Errorf("task metrics table:\n%s", table)
	}

	// A collection after the image and its container went counts a run
	// and the bytes of the blobs it removed.
	k.ok("container", "rm", "--force", "busy")
	k.ok("image", "rm", k.ref)
	k.ok("gc")
	s = scrapeMetrics(t, url)
	if v, _ := s.value("keel_gc_runs_total", map[string]string{"result": "success"}); v < 1 {
		t.Errorf("keel_gc_runs_total{success}: %v", v)
	}
	if v, _ := s.value("keel_gc_freed_bytes_total", nil); v < 1 {
		t.Errorf("keel_gc_freed_bytes_total: %v", v)
	}
	if _, ok := s.value("container_cpu_total_nanoseconds", busy); ok {
		t.Error("a removed task still has metrics")
	}
}

// TestMetricsOOM: a task whose process the kernel kills for its memory
// limit counts in container_memory_oom_total.
func TestMetricsOOM(t *testing.T) {
	t.Parallel()
	k, url := metricsKeeld(t)
	k.ok("image", "pull", "-q", "--snapshotter", "overlay", k.ref)
	// A subshell grows until the OOM killer ends it; the task goes on.
	k.ok("run", "-d", "--snapshotter", "overlay", "--memory-limit", "16m", k.ref, "oom", "sh", "-c",
		"(x=0123456789abcdef; while true; do x=$x$x; done); exec /bin/busybox sleep 100000")
	oom := map[string]string{"container_id": "oom", "namespace": "default"}
	eventually(t, settle, "an OOM counted", func() error {
		if v, _ := scrapeMetrics(t, url).value("container_memory_oom_total", oom); v < 1 {
			return fmt.Errorf("container_memory_oom_total %v", v)
		}
		return nil
	})
	var tasks []struct {
		Status string `json:"status"`
	}
	k.okJSON(&tasks, "task", "ls")
	if len(tasks) != 1 || tasks[0].Status != "running" {
		t.Errorf("tasks after the OOM: %+v", tasks)
	}
}

// TestMetricsStuckRuntime: a runtime that answers nothing (its process
// stopped) does not hang a scrape: the scrape comes back with keeld's own
// metrics and counts the call that missed its deadline; once the runtime
// runs again, the task's metrics are back.
func TestMetricsStuckRuntime(t *testing.T) {
	t.Parallel()
	k, url := metricsKeeld(t)
	k.ok("image", "pull", "-q", "--snapshotter", "overlay", k.ref)
	k.ok("run", "-d", "--snapshotter", "overlay", k.ref, "stuck", "/bin/busybox", "sleep", "100000")
	task := map[string]string{"container_id": "stuck"}
	if _, ok := scrapeMetrics(t, url).value("container_cpu_total_nanoseconds", task); !ok {
		t.Fatal("no metrics of the running task")
	}
	pid := k.plugins()["runtime.runc"].Pid
	if pid == 0 {
		t.Fatal("runtime plugin has no pid")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { syscall.Kill(pid, syscall.SIGCONT) }
	t.Cleanup(cont)
	// kill returns before the stop: each thread stops once it runs again,
	// which on a loaded machine may take a while.
	eventually(t, settle, "the runtime plugin stopped", func() error {
		stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		for _, st := range stats {
			if s := procStat(strings.TrimSuffix(strings.TrimPrefix(st, "/proc/"), "/stat")); !strings.HasSuffix(s, ") T") && !strings.HasSuffix(s, ") t") {
				return fmt.Errorf("thread %s: %q", st, s)
			}
		}
		if len(stats) == 0 {
			return fmt.Errorf("no threads of %d", pid)
		}
		return nil
	})

	start := time.Now()
	s := scrapeMetrics(t, url)
	took := time.Since(start)
	if _, ok := s.value("container_cpu_total_nanoseconds", task); ok {
		t.Error("a stopped runtime's task has metrics")
	}
	if v, _ := s.value("keel_task_stats_errors_total", map[string]string{"runtime": "runc", "reason": "timeout"}); v < 1 {
		t.Errorf("keel_task_stats_errors_total{reason=timeout}: %v", v)
	}
	if _, ok := s.value("keel_plugin_up", map[string]string{"kind": "runtime", "name": "runc"}); !ok {
		t.Error("keeld's own metrics missing from the scrape")
	}
	t.Logf("scrape with a stopped runtime took %s", took)

	cont()
	eventually(t, settle, "the task's metrics back", func() error {
		if _, ok := scrapeMetrics(t, url).value("container_cpu_total_nanoseconds", task); !ok {
			return fmt.Errorf("no container_cpu_total_nanoseconds")
		}
		return nil
	})
}
