package cri

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics) are the
// cAdvisor-style ones the kubelet exports when it takes pod and container
// stats from the runtime. Names, label keys and value sources follow
// containerd's CRI (itself after cAdvisor): every metric carries the pod,
// namespace, container, id and image labels (a pod's own network metrics
// have an empty container and image, and the pod's id), and some a few of
// their own. Values are whole numbers (the CRI's UInt64Value): seconds are
// truncated, as containerd truncates them.
//
// keel-cri does not report hugetlb use, pressure stall times, the cpu
// quota, the memory reservation or the soft ulimits (critest's list of
// metrics not yet implemented by runtimes).

// baseLabelKeys are the labels of every metric, in the order of their
// values.
var baseLabelKeys = []string{"pod", "namespace", "container", "id", "image"}

func labelKeys(extra ...string) []string {
	return append(append([]string(nil), baseLabelKeys...), extra...)
}

// metricDescriptors describe every metric keel-cri emits.
var metricDescriptors = []*runtimeapi.MetricDescriptor{
	// cpu
	{Name: "container_cpu_usage_seconds_total", Help: "Cumulative CPU time consumed in seconds.", LabelKeys: labelKeys()},
	{Name: "container_cpu_user_seconds_total", Help: "Cumulative user CPU time consumed in seconds.", LabelKeys: labelKeys()},
	{Name: "container_cpu_system_seconds_total", Help: "Cumulative system CPU time consumed in seconds.", LabelKeys: labelKeys()},
	{Name: "container_cpu_cfs_periods_total", Help: "Number of elapsed enforcement period intervals.", LabelKeys: labelKeys()},
	{Name: "container_cpu_cfs_throttled_periods_total", Help: "Number of throttled period intervals.", LabelKeys: labelKeys()},
	{Name: "container_cpu_cfs_throttled_seconds_total", Help: "Total time duration the container has been throttled.", LabelKeys: labelKeys()},
	// memory
	{Name: "container_memory_usage_bytes", Help: "Current memory usage in bytes, including all memory regardless of when it was accessed.", LabelKeys: labelKeys()},
	{Name: "container_memory_working_set_bytes", Help: "Current working set in bytes: usage less the inactive file cache.", LabelKeys: labelKeys()},
	{Name: "container_memory_max_usage_bytes", Help: "Maximum memory usage recorded in bytes.", LabelKeys: labelKeys()},
	{Name: "container_memory_rss", Help: "Size of RSS in bytes.", LabelKeys: labelKeys()},
	{Name: "container_memory_cache", Help: "Number of bytes of page cache memory.", LabelKeys: labelKeys()},
	{Name: "container_memory_mapped_file", Help: "Size of memory mapped files in bytes.", LabelKeys: labelKeys()},
	{Name: "container_memory_total_active_file_bytes", Help: "Active file cache memory in bytes.", LabelKeys: labelKeys()},
	{Name: "container_memory_total_inactive_file_bytes", Help: "Inactive file cache memory in bytes.", LabelKeys: labelKeys()},
	{Name: "container_memory_swap", Help: "Container swap usage in bytes.", LabelKeys: labelKeys()},
	{Name: "container_memory_kernel_usage", Help: "Size of kernel memory allocated to the container in bytes.", LabelKeys: labelKeys()},
	{Name: "container_memory_failcnt", Help: "Number of memory usage hits limits (cgroup v1; 0 on v2).", LabelKeys: labelKeys()},
	{Name: "container_memory_failures_total", Help: "Cumulative count of memory allocation failures.", LabelKeys: labelKeys("failure_type", "scope")},
	{Name: "container_oom_events_total", Help: "Count of out of memory events observed for the container.", LabelKeys: labelKeys()},
	// network, of the pod
	{Name: "container_network_receive_bytes_total", Help: "Cumulative count of bytes received.", LabelKeys: labelKeys("interface")},
	{Name: "container_network_receive_packets_total", Help: "Cumulative count of packets received.", LabelKeys: labelKeys("interface")},
	{Name: "container_network_receive_packets_dropped_total", Help: "Cumulative count of packets dropped while receiving.", LabelKeys: labelKeys("interface")},
	{Name: "container_network_receive_errors_total", Help: "Cumulative count of errors encountered while receiving.", LabelKeys: labelKeys("interface")},
	{Name: "container_network_transmit_bytes_total", Help: "Cumulative count of bytes transmitted.", LabelKeys: labelKeys("interface")},
	{Name: "container_network_transmit_packets_total", Help: "Cumulative count of packets transmitted.", LabelKeys: labelKeys("interface")},
	{Name: "container_network_transmit_packets_dropped_total", Help: "Cumulative count of packets dropped while transmitting.", LabelKeys: labelKeys("interface")},
	{Name: "container_network_transmit_errors_total", Help: "Cumulative count of errors encountered while transmitting.", LabelKeys: labelKeys("interface")},
	// filesystem: the writable layer on the snapshotter's filesystem
	{Name: "container_fs_usage_bytes", Help: "Number of bytes consumed by the container's writable layer.", LabelKeys: labelKeys("device")},
	{Name: "container_fs_limit_bytes", Help: "Number of bytes of the filesystem the writable layer is on.", LabelKeys: labelKeys("device")},
	{Name: "container_fs_inodes_total", Help: "Number of inodes of the filesystem the writable layer is on.", LabelKeys: labelKeys("device")},
	{Name: "container_fs_inodes_free", Help: "Number of available inodes of the filesystem the writable layer is on.", LabelKeys: labelKeys("device")},
	// block io
	{Name: "container_fs_reads_bytes_total", Help: "Cumulative count of bytes read.", LabelKeys: labelKeys("device")},
	{Name: "container_fs_reads_total", Help: "Cumulative count of reads completed.", LabelKeys: labelKeys("device")},
	{Name: "container_fs_writes_bytes_total", Help: "Cumulative count of bytes written.", LabelKeys: labelKeys("device")},
	{Name: "container_fs_writes_total", Help: "Cumulative count of writes completed.", LabelKeys: labelKeys("device")},
	{Name: "container_blkio_device_usage_total", Help: "Blkio device bytes usage.", LabelKeys: labelKeys("device", "major", "minor", "operation")},
	// processes
	{Name: "container_processes", Help: "Number of processes running inside the container.", LabelKeys: labelKeys()},
	{Name: "container_threads", Help: "Number of threads running inside the container.", LabelKeys: labelKeys()},
	{Name: "container_threads_max", Help: "Maximum number of threads allowed inside the container, infinity if value is zero.", LabelKeys: labelKeys()},
	{Name: "container_file_descriptors", Help: "Number of open file descriptors for the container.", LabelKeys: labelKeys()},
	{Name: "container_sockets", Help: "Number of open sockets for the container.", LabelKeys: labelKeys()},
	// the container's spec and times
	{Name: "container_spec_cpu_period", Help: "CPU period of the container.", LabelKeys: labelKeys()},
	{Name: "container_spec_cpu_shares", Help: "CPU share of the container.", LabelKeys: labelKeys()},
	{Name: "container_spec_memory_limit_bytes", Help: "Memory limit for the container.", LabelKeys: labelKeys()},
	{Name: "container_spec_memory_swap_limit_bytes", Help: "Memory swap limit for the container.", LabelKeys: labelKeys()},
	{Name: "container_start_time_seconds", Help: "Start time of the container since unix epoch in seconds.", LabelKeys: labelKeys()},
	{Name: "container_last_seen", Help: "Last time a container was seen by the exporter.", LabelKeys: labelKeys()},
}

// ListMetricDescriptors: every metric ListPodSandboxMetrics may emit.
func (r *runtimeService) ListMetricDescriptors(context.Context, *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	out := make([]*runtimeapi.MetricDescriptor, len(metricDescriptors))
	for i, d := range metricDescriptors {
		out[i] = &runtimeapi.MetricDescriptor{Name: d.Name, Help: d.Help, LabelKeys: slices.Clone(d.LabelKeys)}
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: out}, nil
}

// metricSet collects the metrics of one container (or pod), all with the
// same base label values.
type metricSet struct {
	at     int64
	labels []string // values of baseLabelKeys
	out    []*runtimeapi.Metric
}

func (s *metricSet) add(typ runtimeapi.MetricType, name string, v uint64, extra ...string) {
	s.out = append(s.out, &runtimeapi.Metric{
		Name: name, Timestamp: s.at, MetricType: typ,
		LabelValues: append(append([]string(nil), s.labels...), extra...),
		Value:       u64(v),
	})
}

func (s *metricSet) gauge(name string, v uint64, extra ...string) {
	s.add(runtimeapi.MetricType_GAUGE, name, v, extra...)
}

func (s *metricSet) counter(name string, v uint64, extra ...string) {
	s.add(runtimeapi.MetricType_COUNTER, name, v, extra...)
}

const nsPerSec = uint64(time.Second)

// cgroupMetrics adds the cpu, memory, block io and pids figures of a
// task's cgroup metrics (v1 or v2).
func (s *metricSet) cgroupMetrics(m proto.Message) error {
	switch m := m.(type) {
	case *v1.Metrics:
		s.cgroup1(m)
	case *v2.Metrics:
		s.cgroup2(m)
	default:
		return fmt.Errorf("task metrics of type %T: %w", m, errdefs.ErrNotImplemented)
	}
	return nil
}

func (s *metricSet) cgroup1(m *v1.Metrics) {
	if u := m.GetCPU().GetUsage(); u != nil {
		s.counter("container_cpu_usage_seconds_total", u.Total/nsPerSec)
		s.counter("container_cpu_user_seconds_total", u.User/nsPerSec)
		s.counter("container_cpu_system_seconds_total", u.Kernel/nsPerSec)
	}
	if t := m.GetCPU().GetThrottling(); t != nil {
		s.counter("container_cpu_cfs_periods_total", t.Periods)
		s.counter("container_cpu_cfs_throttled_periods_total", t.ThrottledPeriods)
		s.counter("container_cpu_cfs_throttled_seconds_total", t.ThrottledTime/nsPerSec)
	}
	if mm := m.GetMemory(); mm != nil {
		if u := mm.GetUsage(); u != nil {
			s.gauge("container_memory_usage_bytes", u.Usage)
			s.gauge("container_memory_working_set_bytes", workingSet(u.Usage, mm.TotalInactiveFile))
			s.gauge("container_memory_max_usage_bytes", u.Max)
			s.counter("container_memory_failcnt", u.Failcnt)
			// memsw counts memory and swap together: swap is the rest,
			// as cAdvisor takes it (0 without swap accounting).
			if sw := mm.GetSwap(); sw != nil && sw.Usage > u.Usage {
				s.gauge("container_memory_swap", sw.Usage-u.Usage)
			} else {
				s.gauge("container_memory_swap", 0)
			}
		}
		s.gauge("container_memory_rss", mm.TotalRSS)
		s.gauge("container_memory_cache", mm.TotalCache)
		s.gauge("container_memory_mapped_file", mm.TotalMappedFile)
		s.gauge("container_memory_total_active_file_bytes", mm.TotalActiveFile)
		s.gauge("container_memory_total_inactive_file_bytes", mm.TotalInactiveFile)
		if k := mm.GetKernel(); k != nil {
			s.gauge("container_memory_kernel_usage", k.Usage)
		}
		s.memoryFailures(mm.PgFault, mm.PgMajFault, mm.TotalPgFault, mm.TotalPgMajFault)
	}
	if o := m.GetMemoryOomControl(); o != nil {
		s.counter("container_oom_events_total", o.OomKill)
	}
	if p := m.GetPids(); p != nil {
		s.gauge("container_threads_max", p.Limit)
	}
	for _, e := range m.GetBlkio().GetIoServiceBytesRecursive() {
		dev := blkDevice(e.Device, e.Major, e.Minor)
		s.counter("container_blkio_device_usage_total", e.Value, dev, strconv.FormatUint(e.Major, 10), strconv.FormatUint(e.Minor, 10), e.Op)
		switch strings.ToLower(e.Op) {
		case "read":
			s.counter("container_fs_reads_bytes_total", e.Value, dev)
		case "write":
			s.counter("container_fs_writes_bytes_total", e.Value, dev)
		}
	}
	for _, e := range m.GetBlkio().GetIoServicedRecursive() {
		dev := blkDevice(e.Device, e.Major, e.Minor)
		switch strings.ToLower(e.Op) {
		case "read":
			s.counter("container_fs_reads_total", e.Value, dev)
		case "write":
			s.counter("container_fs_writes_total", e.Value, dev)
		}
	}
}

func (s *metricSet) cgroup2(m *v2.Metrics) {
	const nsPerUsec = uint64(time.Microsecond)
	if c := m.GetCPU(); c != nil {
		s.counter("container_cpu_usage_seconds_total", c.UsageUsec*nsPerUsec/nsPerSec)
		s.counter("container_cpu_user_seconds_total", c.UserUsec*nsPerUsec/nsPerSec)
		s.counter("container_cpu_system_seconds_total", c.SystemUsec*nsPerUsec/nsPerSec)
		s.counter("container_cpu_cfs_periods_total", c.NrPeriods)
		s.counter("container_cpu_cfs_throttled_periods_total", c.NrThrottled)
		s.counter("container_cpu_cfs_throttled_seconds_total", c.ThrottledUsec*nsPerUsec/nsPerSec)
	}
	if mm := m.GetMemory(); mm != nil {
		s.gauge("container_memory_usage_bytes", mm.Usage)
		s.gauge("container_memory_working_set_bytes", workingSet(mm.Usage, mm.InactiveFile))
		s.gauge("container_memory_max_usage_bytes", mm.MaxUsage)
		s.counter("container_memory_failcnt", 0) // v2 has no failcnt
		s.gauge("container_memory_swap", mm.SwapUsage)
		s.gauge("container_memory_rss", mm.Anon)
		s.gauge("container_memory_cache", mm.File)
		s.gauge("container_memory_mapped_file", mm.FileMapped)
		s.gauge("container_memory_total_active_file_bytes", mm.ActiveFile)
		s.gauge("container_memory_total_inactive_file_bytes", mm.InactiveFile)
		// The kernel's own memory of the cgroup: stacks, slab and socket
		// buffers (cgroups' stats lack memory.stat's "kernel").
		s.gauge("container_memory_kernel_usage", mm.KernelStack+mm.Slab+mm.Sock)
		// v2 counts faults of the whole subtree only.
		s.memoryFailures(mm.Pgfault, mm.Pgmajfault, mm.Pgfault, mm.Pgmajfault)
	}
	if e := m.GetMemoryEvents(); e != nil {
		s.counter("container_oom_events_total", e.OomKill)
	}
	if p := m.GetPids(); p != nil {
		s.gauge("container_threads_max", p.Limit)
	}
	for _, e := range m.GetIo().GetUsage() {
		dev := blkDevice("", e.Major, e.Minor)
		major, minor := strconv.FormatUint(e.Major, 10), strconv.FormatUint(e.Minor, 10)
		s.counter("container_blkio_device_usage_total", e.Rbytes, dev, major, minor, "Read")
		s.counter("container_blkio_device_usage_total", e.Wbytes, dev, major, minor, "Write")
		s.counter("container_fs_reads_bytes_total", e.Rbytes, dev)
		s.counter("container_fs_writes_bytes_total", e.Wbytes, dev)
		s.counter("container_fs_reads_total", e.Rios, dev)
		s.counter("container_fs_writes_total", e.Wios, dev)
	}
}

// memoryFailures are the page faults, minor and major, of the cgroup
// itself ("container") and with its descendants ("hierarchy"), as
// cAdvisor labels them.
func (s *metricSet) memoryFailures(pgfault, pgmajfault, totalPgfault, totalPgmajfault uint64) {
	const name = "container_memory_failures_total"
	s.counter(name, pgfault, "pgfault", "container")
	s.counter(name, pgmajfault, "pgmajfault", "container")
	s.counter(name, totalPgfault, "pgfault", "hierarchy")
	s.counter(name, totalPgmajfault, "pgmajfault", "hierarchy")
}

// blkDevice names a block device: its name when the kernel gave one,
// else major:minor.
func blkDevice(name string, major, minor uint64) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("%d:%d", major, minor)
}

// specMetrics adds the limits the container's spec sets.
func (s *metricSet) specMetrics(spec *specs.Spec) {
	if spec.Linux == nil || spec.Linux.Resources == nil {
		return
	}
	res := spec.Linux.Resources
	if c := res.CPU; c != nil {
		if c.Period != nil {
			s.gauge("container_spec_cpu_period", *c.Period)
		}
		if c.Shares != nil {
			s.gauge("container_spec_cpu_shares", *c.Shares)
		}
	}
	if m := res.Memory; m != nil {
		if m.Limit != nil && *m.Limit > 0 {
			s.gauge("container_spec_memory_limit_bytes", uint64(*m.Limit))
		}
		if m.Swap != nil && *m.Swap > 0 {
			s.gauge("container_spec_memory_swap_limit_bytes", uint64(*m.Swap))
		}
	}
}

// processMetrics adds the counts of the processes pids, their threads,
// open files and sockets, read from /proc (keel-cri runs on the host as
// root); a process that ended meanwhile counts for nothing.
func (s *metricSet) processMetrics(pids []client.ProcessInfo) {
	var procs, threads, fds, sockets uint64
	for _, p := range pids {
		proc, err := procfs.NewProc(int(p.Pid))
		if err != nil {
			continue
		}
		st, err := proc.Stat()
		if err != nil {
			continue
		}
		procs++
		threads += uint64(st.NumThreads)
		targets, err := proc.FileDescriptorTargets()
		if err != nil {
			continue
		}
		fds += uint64(len(targets))
		for _, t := range targets {
			if strings.HasPrefix(t, "socket:") {
				sockets++
			}
		}
	}
	s.gauge("container_processes", procs)
	s.gauge("container_threads", threads)
	s.gauge("container_file_descriptors", fds)
	s.gauge("container_sockets", sockets)
}

// fsMetrics adds the writable layer's use, and the size and inodes of the
// filesystem it is on (the snapshotter's directory under keeld's root).
func (s *metricSet) fsMetrics(layer *runtimeapi.FilesystemUsage) {
	dir := layer.GetFsId().GetMountpoint()
	s.gauge("container_fs_usage_bytes", layer.GetUsedBytes().GetValue(), dir)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return // no such directory: keel-cri runs apart from keeld's root
	}
	s.gauge("container_fs_limit_bytes", st.Blocks*uint64(st.Bsize), dir)
	s.gauge("container_fs_inodes_total", st.Files, dir)
	s.gauge("container_fs_inodes_free", st.Ffree, dir)
}

// netMetrics adds the counters of a pod's interfaces.
func (s *metricSet) netMetrics(links []procfs.NetDevLine) {
	for _, l := range links {
		s.counter("container_network_receive_bytes_total", l.RxBytes, l.Name)
		s.counter("container_network_receive_packets_total", l.RxPackets, l.Name)
		s.counter("container_network_receive_packets_dropped_total", l.RxDropped, l.Name)
		s.counter("container_network_receive_errors_total", l.RxErrors, l.Name)
		s.counter("container_network_transmit_bytes_total", l.TxBytes, l.Name)
		s.counter("container_network_transmit_packets_total", l.TxPackets, l.Name)
		s.counter("container_network_transmit_packets_dropped_total", l.TxDropped, l.Name)
		s.counter("container_network_transmit_errors_total", l.TxErrors, l.Name)
	}
}

// containerMetrics are the metrics of ct, a container of pod sb; nil when
// its task does not run (or went meanwhile).
func (sc *statsCall) containerMetrics(ctx context.Context, sb client.ContainerInfo, ct *client.Container) (*runtimeapi.ContainerMetrics, error) {
	if !sc.live(ct.ID()) {
		return nil, nil
	}
	info := ct.Info()
	t, msg, err := taskMetrics(ctx, ct)
	if t == nil || err != nil {
		return nil, err
	}
	pids, err := taskPids(ctx, t)
	if err != nil {
		return nil, err
	}
	layer, err := sc.writableLayer(ctx, info)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s := &metricSet{at: now.UnixNano(), labels: []string{
		sb.Labels[LabelPodName], sb.Labels[LabelPodNamespace], info.Labels[LabelContainerName], info.ID, info.Labels[LabelImageRef],
	}}
	if err := s.cgroupMetrics(msg); err != nil {
		return nil, fmt.Errorf("container %s: %w", ct.ID(), err)
	}
	s.processMetrics(pids)
	s.fsMetrics(layer)
	if info.Spec != nil {
		s.specMetrics(info.Spec)
	}
	if started, err := strconv.ParseInt(info.Labels[LabelStartedAt], 10, 64); err == nil {
		s.gauge("container_start_time_seconds", uint64(started/int64(time.Second)))
	}
	s.gauge("container_last_seen", uint64(now.Unix()))
	return &runtimeapi.ContainerMetrics{ContainerId: info.ID, Metrics: s.out}, nil
}

// podMetrics are the metrics of the ready pod sb and of its running
// containers among members; nil when it is not ready.
func (sc *statsCall) podMetrics(ctx context.Context, sb *client.Container, members []*client.Container) (*runtimeapi.PodSandboxMetrics, error) {
	info := sb.Info()
	t, ok := sc.tasks[sb.ID()]
	if sandboxState(t, ok) != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, nil
	}
	s := &metricSet{at: time.Now().UnixNano(), labels: []string{info.Labels[LabelPodName], info.Labels[LabelPodNamespace], "", info.ID, ""}}
	if namespaceMode(info.Spec, specs.NetworkNamespace) == runtimeapi.NamespaceMode_POD {
		links, err := podLinks(t.Pid)
		if err != nil {
			sc.r.s.logger.Debug("pod network metrics", "id", sb.ID(), "error", err)
		}
		s.netMetrics(links)
	}
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: info.ID, Metrics: s.out}
	for _, ct := range members {
		cm, err := sc.containerMetrics(ctx, info, ct)
		if err != nil {
			return nil, err
		}
		if cm != nil {
			pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
		}
	}
	return pm, nil
}

// ListPodSandboxMetrics: the metrics of every ready pod, and of its
// running containers.
func (r *runtimeService) ListPodSandboxMetrics(ctx context.Context, _ *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	sbs, sc, err := r.newStatsCall(ctx, r.sandboxes)
	if err != nil {
		return nil, err
	}
	cts, err := r.containers(ctx)
	if err != nil {
		return nil, err
	}
	members := map[string][]*client.Container{}
	for _, ct := range cts {
		id := ct.Info().Labels[LabelSandboxID]
		members[id] = append(members[id], ct)
	}
	pods, err := gather(ctx, sbs, func(ctx context.Context, _ int, sb *client.Container) (*runtimeapi.PodSandboxMetrics, error) {
		return sc.podMetrics(ctx, sb, members[sb.ID()])
	})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: pods}, nil
}
