package cri

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/procfs"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// Stats are answered as containerd's CRI answers them, from what keeld
// gives every embedder:
//
//   - a container's cpu and memory from its task's cgroup metrics
//     (Task.Metrics, cgroup v1 or v2); usage_nano_cores is the rate between
//     this sample and the one before it of the same container, kept in
//     memory only (a rate, not state: the first sample after a start of
//     keel-cri reports 0, as containerd's first does);
//   - its writable layer from the snapshotter's Usage of its snapshot, at
//     the snapshotter's directory under keeld's root;
//   - a pod's cpu and memory are the sum of its pause task's and its
//     containers' tasks' (containerd reads the kubelet's pod cgroup
//     instead; keel-cri reads cgroups only through keeld, and the sum is
//     that cgroup's content). A pod's available_bytes is not reported: a
//     sum of the containers' limits is no limit of the pod;
//   - its network from /proc/<pause pid>/net/dev, which the kernel answers
//     from the pause process's network namespace: every interface but lo,
//     eth0 (keel's first CNI link) as the default one;
//   - its process count from the Pids of its pause task and of its running
//     containers' tasks.

// defaultIfName is the pod's first CNI interface, reported as the
// default one.
const defaultIfName = "eth0"

// rateKeep is how long a container's last cpu sample is kept without a
// newer one; the kubelet samples every few seconds.
const rateKeep = 10 * time.Minute

// cpuSample is a cumulative cpu time at a moment.
type cpuSample struct {
	at    time.Time
	total uint64 // nanoseconds of cpu used
}

// cpuRates keeps the last cpu sample of each container and pod, to give
// usage_nano_cores over the time between two calls.
type cpuRates struct {
	mu   sync.Mutex
	last map[string]cpuSample
}

// nanoCores is the cpu used per second since id's previous sample, in
// nanoseconds (1e9 is one core busy); 0 without one. s replaces it
// unless s is older (calls that crossed).
func (r *cpuRates) nanoCores(id string, s cpuSample) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]cpuSample{}
	}
	prev, ok := r.last[id]
	if ok && s.at.Before(prev.at) {
		return 0
	}
	r.last[id] = s
	for k, v := range r.last {
		if s.at.Sub(v.at) > rateKeep {
			delete(r.last, k) // removed long ago
		}
	}
	if !ok {
		return 0
	}
	return cpuRate(prev, s)
}

// cpuRate is the cpu used per second between two samples, in
// nanoseconds; 0 when no time passed or the count went back (a new task
// under the same id).
func cpuRate(prev, cur cpuSample) uint64 {
	d := cur.at.Sub(prev.at)
	if d <= 0 || cur.total < prev.total {
		return 0
	}
	return uint64(float64(cur.total-prev.total) / d.Seconds())
}

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

// workingSet is the memory the kubelet counts as in use: usage less the
// inactive file cache (which the kernel reclaims first), never below 0.
func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile < usage {
		return usage - inactiveFile
	}
	return 0
}

// availableBytes is the limit less the working set; 0 when there is no
// limit (the kernel reports a huge number, rounded to its page size).
func availableBytes(limit, workingSet uint64) uint64 {
	const unlimited = 1 << 62
	if limit > unlimited || limit < workingSet {
		return 0
	}
	return limit - workingSet
}

// criUsage is a task's cgroup metrics as the CRI reports them: nil for
// what the metrics lack.
func criUsage(m proto.Message, at time.Time) (*runtimeapi.CpuUsage, *runtimeapi.MemoryUsage, error) {
	ts := at.UnixNano()
	var cpu *runtimeapi.CpuUsage
	var mem *runtimeapi.MemoryUsage
	switch m := m.(type) {
	case *v1.Metrics:
		if u := m.GetCPU().GetUsage(); u != nil {
			cpu = &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: u64(u.Total)}
		}
		if mm := m.GetMemory(); mm.GetUsage() != nil {
			ws := workingSet(mm.Usage.Usage, mm.TotalInactiveFile)
			mem = &runtimeapi.MemoryUsage{
				Timestamp: ts, WorkingSetBytes: u64(ws), AvailableBytes: u64(availableBytes(mm.Usage.Limit, ws)),
				UsageBytes: u64(mm.Usage.Usage), RssBytes: u64(mm.TotalRSS),
				PageFaults: u64(mm.TotalPgFault), MajorPageFaults: u64(mm.TotalPgMajFault),
			}
		}
	case *v2.Metrics:
		if c := m.GetCPU(); c != nil {
			cpu = &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: u64(c.UsageUsec * 1000)}
		}
		if mm := m.GetMemory(); mm != nil {
			ws := workingSet(mm.Usage, mm.InactiveFile)
			mem = &runtimeapi.MemoryUsage{
				Timestamp: ts, WorkingSetBytes: u64(ws), AvailableBytes: u64(availableBytes(mm.UsageLimit, ws)),
				// Anonymous memory is v2's rss, as cAdvisor and containerd take it.
				UsageBytes: u64(mm.Usage), RssBytes: u64(mm.Anon),
				PageFaults: u64(mm.Pgfault), MajorPageFaults: u64(mm.Pgmajfault),
			}
		}
	default:
		return nil, nil, fmt.Errorf("task metrics of type %T: %w", m, errdefs.ErrNotImplemented)
	}
	return cpu, mem, nil
}

// sumUsage adds cpu and memory figures of one task to a pod's sums (nil
// until the first); available bytes are not summed.
func sumUsage(cpu *runtimeapi.CpuUsage, mem *runtimeapi.MemoryUsage, addCPU *runtimeapi.CpuUsage, addMem *runtimeapi.MemoryUsage) (*runtimeapi.CpuUsage, *runtimeapi.MemoryUsage) {
	add := func(a, b *runtimeapi.UInt64Value) *runtimeapi.UInt64Value {
		return u64(a.GetValue() + b.GetValue())
	}
	if addCPU != nil {
		if cpu == nil {
			cpu = &runtimeapi.CpuUsage{}
		}
		cpu.Timestamp = max(cpu.Timestamp, addCPU.Timestamp)
		cpu.UsageCoreNanoSeconds = add(cpu.UsageCoreNanoSeconds, addCPU.UsageCoreNanoSeconds)
	}
	if addMem != nil {
		if mem == nil {
			mem = &runtimeapi.MemoryUsage{}
		}
		mem.Timestamp = max(mem.Timestamp, addMem.Timestamp)
		mem.WorkingSetBytes = add(mem.WorkingSetBytes, addMem.WorkingSetBytes)
		mem.UsageBytes = add(mem.UsageBytes, addMem.UsageBytes)
		mem.RssBytes = add(mem.RssBytes, addMem.RssBytes)
		mem.PageFaults = add(mem.PageFaults, addMem.PageFaults)
		mem.MajorPageFaults = add(mem.MajorPageFaults, addMem.MajorPageFaults)
	}
	return cpu, mem
}

// statsCall holds what one stats call reads once: keeld's root and
// default snapshotter, and the namespace's tasks.
type statsCall struct {
	r           *runtimeService
	root        string
	snapshotter string
	tasks       map[string]client.TaskInfo
}

// newStatsCall starts a stats call over the containers (or pods) find
// returns.
func (r *runtimeService) newStatsCall(ctx context.Context, find func(context.Context) ([]*client.Container, error)) ([]*client.Container, *statsCall, error) {
	cts, err := find(ctx)
	if err != nil {
		return nil, nil, err
	}
	info, err := r.s.c.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	tasks, err := r.taskStates(ctx)
	if err != nil {
		return nil, nil, err
	}
	return cts, &statsCall{r: r, root: info.Root, snapshotter: info.DefaultSnapshotter, tasks: tasks}, nil
}

// one makes a lookup of one container a find of newStatsCall.
func one(lookup func(context.Context, string) (*client.Container, error), id string) func(context.Context) ([]*client.Container, error) {
	return func(ctx context.Context) ([]*client.Container, error) {
		ct, err := lookup(ctx, id)
		return []*client.Container{ct}, err
	}
}

// live: the task of id runs (or is paused), so it has figures.
func (sc *statsCall) live(id string) bool {
	t, ok := sc.tasks[id]
	return ok && (t.Status == runtime.StatusRunning || t.Status == runtime.StatusPaused || t.Status == runtime.StatusPausing)
}

// taskFigures are the cpu and memory of ct's task and, with pids, its
// process count; nothing (no error) when the task is not live or went
// meanwhile.
func (sc *statsCall) taskFigures(ctx context.Context, ct *client.Container, pids bool) (*runtimeapi.CpuUsage, *runtimeapi.MemoryUsage, int, error) {
	if !sc.live(ct.ID()) {
		return nil, nil, 0, nil
	}
	t, msg, err := taskMetrics(ctx, ct)
	if t == nil || err != nil {
		return nil, nil, 0, err
	}
	cpu, mem, err := criUsage(msg, time.Now())
	if err != nil {
		return nil, nil, 0, fmt.Errorf("container %s: %w", ct.ID(), err)
	}
	n := 0
	if pids {
		ps, err := taskPids(ctx, t)
		if err != nil {
			return nil, nil, 0, err
		}
		n = len(ps)
	}
	return cpu, mem, n, nil
}

// gone: the task ended or went while a stats call read it.
func gone(err error) bool { return errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) }

// taskMetrics is ct's task and its cgroup metrics message; no task (and
// no error) when it went meanwhile.
func taskMetrics(ctx context.Context, ct *client.Container) (*client.Task, proto.Message, error) {
	t, err := ct.Task(ctx)
	if err != nil {
		if gone(err) {
			err = nil
		}
		return nil, nil, err
	}
	m, err := t.Metrics(ctx)
	if err != nil {
		if gone(err) {
			err = nil
		}
		return nil, nil, err
	}
	msg, err := m.Unmarshal()
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: %w", ct.ID(), err)
	}
	return t, msg, nil
}

// taskPids are t's processes; none when it went meanwhile.
func taskPids(ctx context.Context, t *client.Task) ([]client.ProcessInfo, error) {
	ps, err := t.Pids(ctx)
	if err != nil && !gone(err) {
		return nil, err
	}
	return ps, nil
}

// writableLayer is the use of ct's snapshot (zero when it is gone).
func (sc *statsCall) writableLayer(ctx context.Context, info client.ContainerInfo) (*runtimeapi.FilesystemUsage, error) {
	name := info.Snapshotter
	if name == "" {
		name = sc.snapshotter
	}
	var used, inodes uint64
	if info.SnapshotKey != "" {
		u, err := sc.r.s.c.SnapshotService(info.Snapshotter).Usage(ctx, info.SnapshotKey)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("container %s: snapshot usage: %w", info.ID, err)
		}
		used, inodes = uint64(max(u.Size, 0)), uint64(max(u.Inodes, 0))
	}
	return &runtimeapi.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: pluginDir(sc.root, "snapshotter", name)},
		UsedBytes:  u64(used),
		InodesUsed: u64(inodes),
	}, nil
}

// container is ct's stats and, with pids, its process count.
func (sc *statsCall) container(ctx context.Context, ct *client.Container, pids bool) (*runtimeapi.ContainerStats, int, error) {
	info := ct.Info()
	layer, err := sc.writableLayer(ctx, info)
	if err != nil {
		return nil, 0, err
	}
	cpu, mem, n, err := sc.taskFigures(ctx, ct, pids)
	if err != nil {
		return nil, 0, err
	}
	if cpu != nil {
		cpu.UsageNanoCores = u64(sc.r.s.rates.nanoCores(ct.ID(), cpuSample{time.Unix(0, cpu.Timestamp), cpu.UsageCoreNanoSeconds.Value}))
	}
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id: info.ID, Metadata: containerMetadata(info.Labels),
			Labels: prefixed(info.Labels, PrefixLabel), Annotations: prefixed(info.Labels, PrefixAnnotation),
		},
		Cpu: cpu, Memory: mem, WritableLayer: layer,
	}, n, nil
}

func (r *runtimeService) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	cts, sc, err := r.newStatsCall(ctx, one(r.findContainer, req.GetContainerId()))
	if err != nil {
		return nil, err
	}
	st, _, err := sc.container(ctx, cts[0], false)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

// ListContainerStats: every container the filter selects (id and pod
// sandbox id or prefixes of them, label selector), running or not; those
// without a live task have no cpu and memory figures.
func (r *runtimeService) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	all, sc, err := r.newStatsCall(ctx, r.containers)
	if err != nil {
		return nil, err
	}
	stats, _, err := sc.containers(ctx, all, req.GetFilter(), false)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: stats}, nil
}

// containers are the stats of the containers f selects among all, and
// with pids the sum of their processes.
func (sc *statsCall) containers(ctx context.Context, all []*client.Container, f *runtimeapi.ContainerStatsFilter, pids bool) ([]*runtimeapi.ContainerStats, int, error) {
	var selected []*client.Container
	for _, ct := range all {
		if matchContainerStats(ct.Info(), f) {
			selected = append(selected, ct)
		}
	}
	counts := make([]int, len(selected))
	out, err := gather(ctx, selected, func(ctx context.Context, i int, ct *client.Container) (*runtimeapi.ContainerStats, error) {
		st, n, err := sc.container(ctx, ct, pids)
		counts[i] = n
		return st, err
	})
	total := 0
	for _, n := range counts {
		total += n
	}
	return out, total, err
}

// statsConcurrency bounds the reads a list of stats makes at once: each
// is a round of calls through keeld to a runtime, and a node's kubelet
// lists every container every few seconds.
const statsConcurrency = 8

// gather reads each of items, statsConcurrency at a time, and returns the
// answers in the order of items, leaving out nil ones; the first error
// ends the call.
func gather[T any, R comparable](ctx context.Context, items []T, read func(context.Context, int, T) (R, error)) ([]R, error) {
	res := make([]R, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(statsConcurrency)
	for i, it := range items {
		g.Go(func() (err error) {
			res[i], err = read(gctx, i, it)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var zero R
	return slices.DeleteFunc(res, func(r R) bool { return r == zero }), nil
}

// matchContainerStats: the filter as ListContainers takes it.
func matchContainerStats(info client.ContainerInfo, f *runtimeapi.ContainerStatsFilter) bool {
	if f == nil {
		return true
	}
	c := &runtimeapi.Container{Id: info.ID, PodSandboxId: info.Labels[LabelSandboxID], Labels: prefixed(info.Labels, PrefixLabel)}
	return matchContainer(c, &runtimeapi.ContainerFilter{Id: f.Id, PodSandboxId: f.PodSandboxId, LabelSelector: f.LabelSelector})
}

// pod is the stats of pod sandbox sb; Unavailable when it is not ready,
// as containerd answers.
func (sc *statsCall) pod(ctx context.Context, sb *client.Container) (*runtimeapi.PodSandboxStats, error) {
	info := sb.Info()
	if t, ok := sc.tasks[sb.ID()]; sandboxState(t, ok) != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", sb.ID(), errdefs.ErrUnavailable)
	}
	members, err := sc.r.podContainers(ctx, sb.ID())
	if err != nil {
		return nil, err
	}
	containers, procs, err := sc.containers(ctx, members, nil, true)
	if err != nil {
		return nil, err
	}
	pauseCPU, pauseMem, n, err := sc.taskFigures(ctx, sb, true)
	if err != nil {
		return nil, err
	}
	procs += n
	// Sums of their own, so no available_bytes of one task comes along.
	cpu, mem := sumUsage(nil, nil, pauseCPU, pauseMem)
	for _, c := range containers {
		cpu, mem = sumUsage(cpu, mem, c.Cpu, c.Memory)
	}
	if cpu != nil {
		cpu.UsageNanoCores = u64(sc.r.s.rates.nanoCores(sb.ID(), cpuSample{time.Unix(0, cpu.Timestamp), cpu.UsageCoreNanoSeconds.Value}))
	}
	now := time.Now().UnixNano()
	lx := &runtimeapi.LinuxPodSandboxStats{
		Cpu: cpu, Memory: mem, Containers: containers,
		Process: &runtimeapi.ProcessUsage{Timestamp: now, ProcessCount: u64(uint64(procs))},
	}
	if namespaceMode(info.Spec, specs.NetworkNamespace) == runtimeapi.NamespaceMode_POD {
		lx.Network, err = podNetwork(sc.tasks[sb.ID()].Pid, now)
		if err != nil {
			sc.r.s.logger.Debug("pod network stats", "id", sb.ID(), "error", err)
		}
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id: info.ID, Metadata: sandboxMetadata(info.Labels),
			Labels: prefixed(info.Labels, PrefixLabel), Annotations: prefixed(info.Labels, PrefixAnnotation),
		},
		Linux: lx,
	}, nil
}

// podNetwork is the traffic of the network namespace pid is in, read
// from /proc/<pid>/net/dev; nil when the process is gone.
func podNetwork(pid uint32, at int64) (*runtimeapi.NetworkUsage, error) {
	links, err := podLinks(pid)
	if err != nil {
		return nil, err
	}
	nu := &runtimeapi.NetworkUsage{Timestamp: at}
	for _, l := range links {
		iface := &runtimeapi.NetworkInterfaceUsage{
			Name: l.Name, RxBytes: u64(l.RxBytes), RxErrors: u64(l.RxErrors), TxBytes: u64(l.TxBytes), TxErrors: u64(l.TxErrors),
		}
		nu.Interfaces = append(nu.Interfaces, iface)
		if l.Name == defaultIfName {
			nu.DefaultInterface = iface
		}
	}
	return nu, nil
}

// podLinks are the counters of every interface but lo of the network
// namespace pid is in, by name.
func podLinks(pid uint32) ([]procfs.NetDevLine, error) {
	p, err := procfs.NewProc(int(pid))
	if err != nil {
		return nil, err
	}
	dev, err := p.NetDev()
	if err != nil {
		return nil, err
	}
	var links []procfs.NetDevLine
	for _, name := range slices.Sorted(maps.Keys(dev)) {
		if name != "lo" {
			links = append(links, dev[name])
		}
	}
	return links, nil
}

func (r *runtimeService) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	sbs, sc, err := r.newStatsCall(ctx, one(r.findSandbox, req.GetPodSandboxId()))
	if err != nil {
		return nil, err
	}
	st, err := sc.pod(ctx, sbs[0])
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: st}, nil
}

// ListPodSandboxStats: the ready pods the filter selects (id or a prefix
// of it, label selector); pods not ready are left out, as containerd
// leaves them.
func (r *runtimeService) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	all, sc, err := r.newStatsCall(ctx, r.sandboxes)
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	var selected []*client.Container
	for _, sb := range all {
		if matchSandbox(toPodSandbox(sb, runtimeapi.PodSandboxState_SANDBOX_READY), &runtimeapi.PodSandboxFilter{Id: f.GetId(), LabelSelector: f.GetLabelSelector()}) {
			selected = append(selected, sb)
		}
	}
	stats, err := gather(ctx, selected, func(ctx context.Context, _ int, sb *client.Container) (*runtimeapi.PodSandboxStats, error) {
		st, err := sc.pod(ctx, sb)
		if errdefs.IsUnavailable(err) {
			return nil, nil
		}
		return st, err
	})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: stats}, nil
}
