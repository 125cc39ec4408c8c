package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIStats: a pod whose container holds 32 MiB and burns cpu; its
// ContainerStats figures move (cpu time and rate, working set, rss,
// available under its limit, its writable layer); ListContainerStats
// filters by id, pod and labels; PodSandboxStats sums the pod, lists its
// containers, counts its processes and sees the traffic of a ping to the
// pod's bridge; ListPodSandboxStats filters and leaves a stopped pod
// out; unknown ids are NotFound; crictl stats and statsp print them.
func TestCRIStats(t *testing.T) {
	t.Parallel()
	k, rs, _, ref := startCRIBusybox(t)
	ctx := t.Context()
	pod, podCfg := criPod(t, rs, "stats")

	const held = 32 << 20
	const limit = 256 << 20
	burnCfg := boxConfig(ref, "burn", fmt.Sprintf(
		`head -c 1048576 /dev/zero >/written; x=$(head -c %d /dev/zero | tr '\0' a); while :; do :; done`, held))
	burnCfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit}
	burnCfg.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_RAW"}}
	burn := criContainer(t, rs, pod, podCfg, burnCfg)
	idle := criContainer(t, rs, pod, podCfg, boxConfig(ref, "idle", "exec sleep 600"))
	created, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: boxConfig(ref, "created", "true"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}

	// The figures move: cpu time, then a rate between two samples; the
	// 32 MiB the shell holds; the file it wrote.
	var st *runtimeapi.ContainerStats
	eventually(t, settle, "burn's stats show its cpu and memory", func() error {
		resp, err := rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: burn})
		if err != nil {
			return err
		}
		st = resp.Stats
		cpu, mem, layer := st.GetCpu(), st.GetMemory(), st.GetWritableLayer()
		switch {
		case cpu.GetUsageCoreNanoSeconds().GetValue() < 2e8:
			return fmt.Errorf("cpu %v", cpu)
		case cpu.GetUsageNanoCores().GetValue() == 0:
			return fmt.Errorf("no cpu rate yet: %v", cpu)
		case mem.GetWorkingSetBytes().GetValue() < held || mem.GetRssBytes().GetValue() < held:
			return fmt.Errorf("memory %v", mem)
		case layer.GetUsedBytes().GetValue() < 1<<20 || layer.GetInodesUsed().GetValue() == 0:
			return fmt.Errorf("writable layer %v", layer)
		}
		return nil
	})
	cpu, mem := st.Cpu, st.Memory
	if cpu.Timestamp == 0 || mem.Timestamp == 0 || st.WritableLayer.Timestamp == 0 {
		t.Errorf("timestamps missing: %v", st)
	}
	if cpu.UsageNanoCores.Value > 3e9 { // two cores here, and the rate is one process's
		t.Errorf("cpu rate %d nanocores", cpu.UsageNanoCores.Value)
	}
	if u, ws, avail := mem.UsageBytes.GetValue(), mem.WorkingSetBytes.Value, mem.AvailableBytes.GetValue(); u < ws || avail == 0 || avail+ws != limit {
		t.Errorf("usage %d, working set %d, available %d: want usage ≥ working set, available = %d - working set", u, ws, avail, limit)
	}
	if mem.PageFaults.GetValue() == 0 {
		t.Errorf("no page faults: %v", mem)
	}
	if fs := st.WritableLayer.GetFsId().GetMountpoint(); !strings.HasPrefix(fs, filepath.Join(k.env.root, "plugins", "snapshotter.")) {
		t.Errorf("writable layer's filesystem %q, want the snapshotter's dir under %s", fs, k.env.root)
	}
	if a := st.Attributes; a.Id != burn || a.Metadata.GetName() != "burn" || a.Labels["app"] != "burn" || a.Annotations["note"] != "container burn" {
		t.Errorf("attributes %v", a)
	}
	// A prefix names the container, as for the other calls.
	if resp, err := rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: burn[:12]}); err != nil || resp.Stats.Attributes.Id != burn {
		t.Errorf("ContainerStats by prefix: %v, %v", resp, err)
	}

	// A second pod, so the pod filters have something to leave out.
	other, otherCfg := criPod(t, rs, "other")
	otherCt := criContainer(t, rs, other, otherCfg, boxConfig(ref, "burn", "exec sleep 600"))

	listed := func(f *runtimeapi.ContainerStatsFilter) []string {
		t.Helper()
		resp, err := rs.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: f})
		if err != nil {
			t.Fatalf("ListContainerStats(%v): %v", f, err)
		}
		for _, s := range resp.Stats {
			if s.Attributes.Id == created.ContainerId && (s.Cpu != nil || s.Memory != nil || s.WritableLayer == nil) {
				t.Errorf("a container that never ran: %v", s)
			}
		}
		return statIDs(resp.Stats, func(s *runtimeapi.ContainerStats) string { return s.Attributes.Id })
	}
	sorted := func(ids ...string) []string { return slices.Sorted(slices.Values(ids)) }
	for _, tc := range []struct {
		name string
		f    *runtimeapi.ContainerStatsFilter
		want []string
	}{
		{"nil", nil, sorted(burn, idle, created.ContainerId, otherCt)},
		{"id", &runtimeapi.ContainerStatsFilter{Id: burn}, []string{burn}},
		{"id prefix", &runtimeapi.ContainerStatsFilter{Id: idle[:10]}, []string{idle}},
		{"pod", &runtimeapi.ContainerStatsFilter{PodSandboxId: pod}, sorted(burn, idle, created.ContainerId)},
		{"other pod", &runtimeapi.ContainerStatsFilter{PodSandboxId: other}, []string{otherCt}},
		{"label", &runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"app": "burn"}}, sorted(burn, otherCt)},
		{"label and pod", &runtimeapi.ContainerStatsFilter{PodSandboxId: pod, LabelSelector: map[string]string{"app": "burn"}}, []string{burn}},
		{"label nobody has", &runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"app": "none"}}, nil},
		{"unknown id", &runtimeapi.ContainerStatsFilter{Id: "0000"}, nil},
	} {
		if got := listed(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("ListContainerStats %s: %v, want %v", tc.name, got, tc.want)
		}
	}

	// The pod: its containers, its sums, its processes, its traffic.
	podStats := func() *runtimeapi.PodSandboxStats {
		t.Helper()
		resp, err := rs.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: pod})
		if err != nil {
			t.Fatalf("PodSandboxStats: %v", err)
		}
		return resp.Stats
	}
	ps := podStats()
	lx := ps.GetLinux()
	if a := ps.Attributes; a.GetId() != pod || a.Metadata.GetName() != "stats" || a.Labels["app"] != "stats" || a.Annotations["note"] != "pod stats" {
		t.Errorf("pod attributes %v", a)
	}
	var burnInPod *runtimeapi.ContainerStats
	if i := slices.IndexFunc(lx.GetContainers(), func(c *runtimeapi.ContainerStats) bool { return c.Attributes.Id == burn }); i >= 0 {
		burnInPod = lx.Containers[i]
	}
	ids := statIDs(lx.GetContainers(), func(s *runtimeapi.ContainerStats) string { return s.Attributes.Id })
	if !slices.Equal(ids, sorted(burn, idle, created.ContainerId)) || burnInPod == nil {
		t.Fatalf("pod's containers %v", ids)
	}
	if lx.Cpu.GetUsageCoreNanoSeconds().GetValue() < burnInPod.Cpu.UsageCoreNanoSeconds.Value ||
		lx.Memory.GetWorkingSetBytes().GetValue() < burnInPod.Memory.WorkingSetBytes.Value || lx.Memory.GetAvailableBytes() != nil ||
		lx.Memory.GetRssBytes().GetValue() < held {
		t.Errorf("pod cpu %v memory %v, burn's cpu %v memory %v: the pod's are the sums", lx.Cpu, lx.Memory, burnInPod.Cpu, burnInPod.Memory)
	}
	// pause, burn's shell, idle's sleep.
	if n := lx.GetProcess().GetProcessCount().GetValue(); n < 3 || lx.Process.Timestamp == 0 {
		t.Errorf("process count %v, want at least 3", lx.Process)
	}
	def := lx.GetNetwork().GetDefaultInterface()
	if def.GetName() != "eth0" || len(lx.Network.Interfaces) == 0 || slices.ContainsFunc(lx.Network.Interfaces, func(i *runtimeapi.NetworkInterfaceUsage) bool { return i.Name == "lo" }) {
		t.Fatalf("pod network %v: want eth0 as the default, no lo", lx.GetNetwork())
	}
	// Ping the pod's bridge (its gateway) from the pod: 3 echoes of 98
	// bytes on the wire each way, at the least.
	gw := bridgeAddr(t, testNetFor(t, k.env.root).bridge)
	ping, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: burn, Cmd: []string{"busybox", "ping", "-c", "3", "-i", "0.2", "-W", "10", gw}, Timeout: 60})
	if err != nil || ping.ExitCode != 0 {
		t.Fatalf("ping %s from the pod: %v %s %s", gw, err, ping.GetStdout(), ping.GetStderr())
	}
	after := podStats().Linux.Network.DefaultInterface
	if after.RxBytes.Value < def.RxBytes.Value+3*98 || after.TxBytes.Value < def.TxBytes.Value+3*98 {
		t.Errorf("eth0 before the ping rx %d tx %d, after rx %d tx %d: want 294 bytes more each way",
			def.RxBytes.Value, def.TxBytes.Value, after.RxBytes.Value, after.TxBytes.Value)
	}
	if after.RxErrors == nil || after.TxErrors == nil {
		t.Errorf("error counts missing: %v", after)
	}

	listPods := func(f *runtimeapi.PodSandboxStatsFilter) []string {
		t.Helper()
		resp, err := rs.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: f})
		if err != nil {
			t.Fatalf("ListPodSandboxStats(%v): %v", f, err)
		}
		return statIDs(resp.Stats, func(s *runtimeapi.PodSandboxStats) string { return s.Attributes.GetId() })
	}
	for _, tc := range []struct {
		name string
		f    *runtimeapi.PodSandboxStatsFilter
		want []string
	}{
		{"nil", nil, sorted(pod, other)},
		{"id", &runtimeapi.PodSandboxStatsFilter{Id: other}, []string{other}},
		{"label", &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "stats"}}, []string{pod}},
		{"shared label", &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"tier": "e2e"}}, sorted(pod, other)},
		{"label nobody has", &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "none"}}, nil},
	} {
		if got := listPods(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("ListPodSandboxStats %s: %v, want %v", tc.name, got, tc.want)
		}
	}

	// Unknown ids are NotFound; a stopped pod has no stats (Unavailable,
	// as containerd answers) and is left out of the list.
	if _, err := rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: "0000"}); status.Code(err) != codes.NotFound {
		t.Errorf("ContainerStats of an unknown id: %v, want NotFound", err)
	}
	if _, err := rs.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: "0000"}); status.Code(err) != codes.NotFound {
		t.Errorf("PodSandboxStats of an unknown id: %v, want NotFound", err)
	}
	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: other}); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: other}); status.Code(err) != codes.Unavailable {
		t.Errorf("PodSandboxStats of a stopped pod: %v, want Unavailable", err)
	}
	if got := listPods(nil); !slices.Equal(got, []string{pod}) {
		t.Errorf("ListPodSandboxStats after the other pod stopped: %v", got)
	}
	// Its exited container is still listed, without figures.
	resp, err := rs.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: otherCt})
	if err != nil || resp.Stats.Cpu != nil || resp.Stats.Memory != nil || resp.Stats.WritableLayer == nil {
		t.Errorf("stats of an exited container: %v, %v", resp, err)
	}

	// crictl prints them (it samples twice, a second apart).
	crictl(t)
	if err := os.WriteFile(filepath.Join(k.env.dir, "crictl.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := k.crictl(t, "stats", "--id", burn)
	if row := lineWith(out, burn[:13]); !strings.Contains(row, "burn") || strings.Contains(row, " 0.00 ") {
		t.Errorf("crictl stats --id: want burn's row with its cpu:\n%s", out)
	}
	if out := k.crictl(t, "stats", "--pod", pod, "--label", "app=idle"); lineWith(out, idle[:13]) == "" || strings.Contains(out, burn[:13]) {
		t.Errorf("crictl stats --pod --label app=idle:\n%s", out)
	}
	out = k.crictl(t, "statsp", "--id", pod)
	if row := lineWith(out, pod[:13]); !strings.HasPrefix(row, "stats ") {
		t.Errorf("crictl statsp --id: want the pod's row:\n%s", out)
	}
	var js struct {
		Stats []struct {
			Attributes struct{ ID string } `json:"attributes"`
			Linux      struct {
				Containers []struct{} `json:"containers"`
				Network    struct {
					DefaultInterface struct{ Name string } `json:"defaultInterface"`
				} `json:"network"`
			} `json:"linux"`
		} `json:"stats"`
	}
	decode(t, k.crictl(t, "statsp", "-o", "json"), &js)
	if len(js.Stats) != 1 || js.Stats[0].Attributes.ID != pod || len(js.Stats[0].Linux.Containers) != 3 || js.Stats[0].Linux.Network.DefaultInterface.Name != "eth0" {
		t.Errorf("crictl statsp -o json: %+v", js)
	}
}

// statIDs are the sorted ids of stats.
func statIDs[S any](stats []S, id func(S) string) []string {
	var ids []string
	for _, s := range stats {
		ids = append(ids, id(s))
	}
	slices.Sort(ids)
	return ids
}

// bridgeAddr is the IPv4 address of the host's bridge: the pods'
// gateway.
func bridgeAddr(t *testing.T, name string) string {
	t.Helper()
	iface, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := iface.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Fatal(errors.New("bridge " + name + " has no IPv4 address"))
	return ""
}

// lineWith is the first line of out holding s, "" for none.
func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
