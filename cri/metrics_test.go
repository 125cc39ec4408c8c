package cri

import (
	"os"
	"slices"
	"strings"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/procfs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
)

// critestMetricNames is critest v1.37.0's expectedMetricDescriptorNames
// less its unimplementedMetricDescriptors: what a runtime must describe.
var critestMetricNames = []string{
	"container_blkio_device_usage_total", "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
	"container_cpu_cfs_throttled_seconds_total", "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
	"container_cpu_user_seconds_total", "container_file_descriptors", "container_fs_inodes_free", "container_fs_inodes_total",
	"container_fs_limit_bytes", "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
	"container_fs_writes_bytes_total", "container_fs_writes_total", "container_last_seen", "container_memory_cache",
	"container_memory_failcnt", "container_memory_failures_total", "container_memory_kernel_usage",
	"container_memory_mapped_file", "container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap",
	"container_memory_usage_bytes", "container_memory_working_set_bytes", "container_network_receive_bytes_total",
	"container_network_receive_errors_total", "container_network_receive_packets_dropped_total",
	"container_network_receive_packets_total", "container_network_transmit_bytes_total",
	"container_network_transmit_errors_total", "container_network_transmit_packets_dropped_total",
	"container_network_transmit_packets_total", "container_oom_events_total", "container_processes", "container_sockets",
	"container_spec_cpu_period", "container_spec_cpu_shares", "container_spec_memory_limit_bytes",
	"container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads", "container_threads_max",
}

func descriptors(t *testing.T) map[string]*runtimeapi.MetricDescriptor {
	t.Helper()
	resp, err := (&runtimeService{}).ListMetricDescriptors(t.Context(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range resp.Descriptors {
		if byName[d.Name] != nil {
			t.Errorf("%s described twice", d.Name)
		}
		byName[d.Name] = d
		if d.Help == "" || !slices.Equal(d.LabelKeys[:len(baseLabelKeys)], baseLabelKeys) {
			t.Errorf("%s: help %q, label keys %v", d.Name, d.Help, d.LabelKeys)
		}
	}
	return byName
}

func TestMetricDescriptorsCoverCritest(t *testing.T) {
	descs := descriptors(t)
	for _, name := range critestMetricNames {
		if descs[name] == nil {
			t.Errorf("%s is not described", name)
		}
	}
}

// allMetrics is a metric set with every adder applied to hand-built
// input: the cgroup message m, this test's own process, a link, a spec.
func allMetrics(t *testing.T, m proto.Message) *metricSet {
	t.Helper()
	s := &metricSet{at: 1, labels: []string{"pod", "ns", "ctr", "id", "image"}}
	if err := s.cgroupMetrics(m); err != nil {
		t.Fatal(err)
	}
	s.processMetrics([]client.ProcessInfo{{Pid: uint32(os.Getpid())}, {Pid: 1 << 30}}) // the second does not exist
	s.fsMetrics(&runtimeapi.FilesystemUsage{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: t.TempDir()}, UsedBytes: u64(4096)})
	s.netMetrics([]procfs.NetDevLine{{Name: "eth0", RxBytes: 10, RxPackets: 1, TxBytes: 20, TxPackets: 2, RxDropped: 3, TxErrors: 4}})
	period, shares, limit := uint64(100000), uint64(1024), int64(64<<20)
	s.specMetrics(&specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{
		CPU: &specs.LinuxCPU{Period: &period, Shares: &shares}, Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit},
	}}})
	return s
}

// value is the metric of name whose label values (past the base ones)
// are extra.
func value(t *testing.T, s *metricSet, name string, extra ...string) (uint64, runtimeapi.MetricType) {
	t.Helper()
	for _, m := range s.out {
		if m.Name == name && slices.Equal(m.LabelValues[len(baseLabelKeys):], extra) {
			return m.Value.Value, m.MetricType
		}
	}
	t.Fatalf("no metric %s %v", name, extra)
	return 0, 0
}

func TestMetricsMatchTheirDescriptors(t *testing.T) {
	descs := descriptors(t)
	for name, m := range map[string]proto.Message{"cgroup v1": cgroup1Sample(), "cgroup v2": cgroup2Sample()} {
		t.Run(name, func(t *testing.T) {
			s := allMetrics(t, m)
			emitted := map[string]bool{}
			for _, m := range s.out {
				d := descs[m.Name]
				if d == nil {
					t.Errorf("%s is emitted but not described", m.Name)
					continue
				}
				if len(m.LabelValues) != len(d.LabelKeys) {
					t.Errorf("%s: label values %v for keys %v", m.Name, m.LabelValues, d.LabelKeys)
				}
				// Counters end in _total (but the inode count), and failcnt.
				counter := strings.HasSuffix(m.Name, "_total") && m.Name != "container_fs_inodes_total" || m.Name == "container_memory_failcnt"
				if (m.MetricType == runtimeapi.MetricType_COUNTER) != counter {
					t.Errorf("%s is a %v", m.Name, m.MetricType)
				}
				emitted[m.Name] = true
			}
			// Start time and last seen come from the container record, not
			// from these adders.
			for name := range descs {
				if !emitted[name] && name != "container_start_time_seconds" && name != "container_last_seen" {
					t.Errorf("%s is described but not emitted", name)
				}
			}
		})
	}
}

func cgroup1Sample() *v1.Metrics {
	return &v1.Metrics{
		CPU: &v1.CPUStat{
			Usage:      &v1.CPUUsage{Total: 7_500_000_000, User: 5_200_000_000, Kernel: 2_100_000_000},
			Throttling: &v1.Throttle{Periods: 40, ThrottledPeriods: 12, ThrottledTime: 3_900_000_000},
		},
		Memory: &v1.MemoryStat{
			Usage:    &v1.MemoryEntry{Usage: 10 << 20, Max: 12 << 20, Failcnt: 2, Limit: 64 << 20},
			Swap:     &v1.MemoryEntry{Usage: 11 << 20},
			Kernel:   &v1.MemoryEntry{Usage: 300 << 10},
			TotalRSS: 6 << 20, TotalCache: 4 << 20, TotalMappedFile: 1 << 20,
			TotalActiveFile: 1 << 20, TotalInactiveFile: 3 << 20,
			PgFault: 100, PgMajFault: 5, TotalPgFault: 150, TotalPgMajFault: 7,
		},
		MemoryOomControl: &v1.MemoryOomControl{OomKill: 1},
		Pids:             &v1.PidsStat{Current: 3, Limit: 1024},
		Blkio: &v1.BlkIOStat{
			IoServiceBytesRecursive: []*v1.BlkIOEntry{
				{Op: "Read", Device: "/dev/vda", Major: 254, Minor: 0, Value: 8192},
				{Op: "Write", Major: 254, Minor: 16, Value: 4096},
				{Op: "Total", Device: "/dev/vda", Major: 254, Minor: 0, Value: 8192},
			},
			IoServicedRecursive: []*v1.BlkIOEntry{
				{Op: "Read", Device: "/dev/vda", Major: 254, Minor: 0, Value: 2},
				{Op: "Write", Major: 254, Minor: 16, Value: 1},
			},
		},
	}
}

func cgroup2Sample() *v2.Metrics {
	return &v2.Metrics{
		CPU: &v2.CPUStat{UsageUsec: 7_500_000, UserUsec: 5_200_000, SystemUsec: 2_100_000, NrPeriods: 40, NrThrottled: 12, ThrottledUsec: 3_900_000},
		Memory: &v2.MemoryStat{
			Usage: 10 << 20, MaxUsage: 12 << 20, UsageLimit: 64 << 20, SwapUsage: 1 << 20, Anon: 6 << 20, File: 4 << 20,
			FileMapped: 1 << 20, ActiveFile: 1 << 20, InactiveFile: 3 << 20, KernelStack: 100 << 10, Slab: 150 << 10, Sock: 50 << 10,
			Pgfault: 150, Pgmajfault: 7,
		},
		MemoryEvents: &v2.MemoryEvents{OomKill: 1},
		Pids:         &v2.PidsStat{Current: 3, Limit: 1024},
		Io:           &v2.IOStat{Usage: []*v2.IOEntry{{Major: 254, Minor: 0, Rbytes: 8192, Wbytes: 4096, Rios: 2, Wios: 1}}},
	}
}

func TestCgroupMetricValues(t *testing.T) {
	type want struct {
		name  string
		extra []string
		value uint64
	}
	shared := []want{
		{"container_cpu_usage_seconds_total", nil, 7}, // seconds, truncated
		{"container_cpu_user_seconds_total", nil, 5},
		{"container_cpu_system_seconds_total", nil, 2},
		{"container_cpu_cfs_periods_total", nil, 40},
		{"container_cpu_cfs_throttled_periods_total", nil, 12},
		{"container_cpu_cfs_throttled_seconds_total", nil, 3},
		{"container_memory_usage_bytes", nil, 10 << 20},
		{"container_memory_working_set_bytes", nil, 7 << 20}, // usage less inactive file
		{"container_memory_max_usage_bytes", nil, 12 << 20},
		{"container_memory_rss", nil, 6 << 20},
		{"container_memory_cache", nil, 4 << 20},
		{"container_memory_mapped_file", nil, 1 << 20},
		{"container_memory_swap", nil, 1 << 20},
		{"container_memory_kernel_usage", nil, 300 << 10},
		{"container_memory_failures_total", []string{"pgfault", "hierarchy"}, 150},
		{"container_memory_failures_total", []string{"pgmajfault", "hierarchy"}, 7},
		{"container_oom_events_total", nil, 1},
		{"container_threads_max", nil, 1024},
		{"container_spec_cpu_period", nil, 100000},
		{"container_spec_cpu_shares", nil, 1024},
		{"container_spec_memory_limit_bytes", nil, 64 << 20},
		{"container_spec_memory_swap_limit_bytes", nil, 64 << 20},
		{"container_network_receive_bytes_total", []string{"eth0"}, 10},
		{"container_network_receive_packets_dropped_total", []string{"eth0"}, 3},
		{"container_network_transmit_packets_total", []string{"eth0"}, 2},
		{"container_network_transmit_errors_total", []string{"eth0"}, 4},
		{"container_processes", nil, 1}, // the pid that does not exist counts for nothing
	}
	for _, tc := range []struct {
		name string
		m    proto.Message
		want []want
	}{
		{"cgroup v1", cgroup1Sample(), append(shared,
			want{"container_memory_failcnt", nil, 2},
			want{"container_memory_failures_total", []string{"pgfault", "container"}, 100},
			want{"container_memory_failures_total", []string{"pgmajfault", "container"}, 5},
			want{"container_blkio_device_usage_total", []string{"/dev/vda", "254", "0", "Read"}, 8192},
			want{"container_blkio_device_usage_total", []string{"254:16", "254", "16", "Write"}, 4096},
			want{"container_fs_reads_bytes_total", []string{"/dev/vda"}, 8192},
			want{"container_fs_writes_bytes_total", []string{"254:16"}, 4096},
			want{"container_fs_reads_total", []string{"/dev/vda"}, 2},
			want{"container_fs_writes_total", []string{"254:16"}, 1},
		)},
		{"cgroup v2", cgroup2Sample(), append(shared,
			want{"container_memory_failcnt", nil, 0},
			want{"container_blkio_device_usage_total", []string{"254:0", "254", "0", "Read"}, 8192},
			want{"container_blkio_device_usage_total", []string{"254:0", "254", "0", "Write"}, 4096},
			want{"container_fs_reads_bytes_total", []string{"254:0"}, 8192},
			want{"container_fs_writes_bytes_total", []string{"254:0"}, 4096},
			want{"container_fs_reads_total", []string{"254:0"}, 2},
			want{"container_fs_writes_total", []string{"254:0"}, 1},
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := allMetrics(t, tc.m)
			for _, w := range tc.want {
				if got, _ := value(t, s, w.name, w.extra...); got != w.value {
					t.Errorf("%s %v = %d, want %d", w.name, w.extra, got, w.value)
				}
			}
			// Figures of this test's own process and temp dir: sensible,
			// not exact.
			if n, _ := value(t, s, "container_threads"); n < 1 {
				t.Errorf("threads = %d", n)
			}
			if n, _ := value(t, s, "container_file_descriptors"); n < 3 {
				t.Errorf("file descriptors = %d", n)
			}
			dir := s.out[slices.IndexFunc(s.out, func(m *runtimeapi.Metric) bool { return m.Name == "container_fs_usage_bytes" })].LabelValues[len(baseLabelKeys)]
			if n, _ := value(t, s, "container_fs_usage_bytes", dir); n != 4096 {
				t.Errorf("fs usage = %d", n)
			}
			limit, _ := value(t, s, "container_fs_limit_bytes", dir)
			total, _ := value(t, s, "container_fs_inodes_total", dir)
			free, _ := value(t, s, "container_fs_inodes_free", dir)
			if limit == 0 || total == 0 || free > total {
				t.Errorf("fs limit %d, inodes %d, free %d", limit, total, free)
			}
		})
	}
}

func TestCgroupMetricsOfAnotherType(t *testing.T) {
	s := &metricSet{}
	if err := s.cgroupMetrics(&runtimeapi.Metric{}); err == nil {
		t.Error("metrics of an unknown type: no error")
	}
}
