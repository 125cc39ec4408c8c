package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criMetrics are one pod's metrics from ListPodSandboxMetrics, by name
// and the label values past the base ones (a container's by its id).
type criMetrics struct {
	pod        map[string]*runtimeapi.Metric
	containers map[string]map[string]*runtimeapi.Metric
}

func metricKey(m *runtimeapi.Metric) string {
	const base = 5 // pod, namespace, container, id, image
	return fmt.Sprint(m.Name, m.LabelValues[min(base, len(m.LabelValues)):])
}

func podMetrics(t *testing.T, rs runtimeapi.RuntimeServiceClient, pod string, descs map[string]*runtimeapi.MetricDescriptor) (*criMetrics, error) {
	resp, err := rs.ListPodSandboxMetrics(t.Context(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(resp.PodMetrics, func(p *runtimeapi.PodSandboxMetrics) bool { return p.PodSandboxId == pod })
	if i < 0 {
		return nil, fmt.Errorf("pod %s not in %d pods' metrics", pod, len(resp.PodMetrics))
	}
	byKey := func(ms []*runtimeapi.Metric) (map[string]*runtimeapi.Metric, error) {
		out := map[string]*runtimeapi.Metric{}
		for _, m := range ms {
			if d := descs[m.Name]; d == nil || len(d.LabelKeys) != len(m.LabelValues) {
				return nil, fmt.Errorf("metric %s %v does not match its descriptor %v", m.Name, m.LabelValues, d)
			}
			out[metricKey(m)] = m
		}
		return out, nil
	}
	pm := &criMetrics{containers: map[string]map[string]*runtimeapi.Metric{}}
	if pm.pod, err = byKey(resp.PodMetrics[i].Metrics); err != nil {
		return nil, err
	}
	for _, c := range resp.PodMetrics[i].ContainerMetrics {
		if pm.containers[c.ContainerId], err = byKey(c.Metrics); err != nil {
			return nil, err
		}
	}
	return pm, nil
}

// TestCRIMetrics: ListMetricDescriptors describes what
// ListPodSandboxMetrics emits; a pod's metrics carry its network (a ping
// to its gateway shows) and a running container's cpu, memory, process,
// filesystem and spec figures, labelled with the pod, namespace,
// container name, id and image; a container that is not running is left
// out.
func TestCRIMetrics(t *testing.T) {
	t.Parallel()
	k, rs, _, ref := startCRIBusybox(t)
	ctx := t.Context()
	pod, podCfg := criPod(t, rs, "metrics")

	dresp, err := rs.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	descs := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range dresp.Descriptors {
		descs[d.Name] = d
	}

	const held = 16 << 20
	const limit = 128 << 20
	cfg := boxConfig(ref, "work", fmt.Sprintf(
		`head -c 2097152 /dev/zero >/written; sync; x=$(head -c %d /dev/zero | tr '\0' a); while :; do :; done`, held))
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: limit, MemorySwapLimitInBytes: limit,
	}
	cfg.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_RAW"}}
	work := criContainer(t, rs, pod, podCfg, cfg)
	created, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: boxConfig(ref, "created", "true"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}

	gw := bridgeAddr(t, testNetFor(t, k.env.root).bridge)
	ping, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: work, Cmd: []string{"busybox", "ping", "-c", "3", "-i", "0.2", "-W", "10", gw}, Timeout: 60})
	if err != nil || ping.ExitCode != 0 {
		t.Fatalf("ping %s from the pod: %v %s %s", gw, err, ping.GetStdout(), ping.GetStderr())
	}

	// The shell holds 16 MiB and burns half a core (its quota): wait for
	// a second of cpu, and for the cfs to have throttled it.
	var pm *criMetrics
	eventually(t, settle, "the work container's cpu and memory show", func() error {
		if pm, err = podMetrics(t, rs, pod, descs); err != nil {
			return err
		}
		c := pm.containers[work]
		if c == nil {
			return fmt.Errorf("no metrics of container %s", work)
		}
		cpu, ws, thr := c["container_cpu_usage_seconds_total[]"], c["container_memory_working_set_bytes[]"], c["container_cpu_cfs_throttled_periods_total[]"]
		switch {
		case cpu == nil || cpu.Value.Value < 1:
			return fmt.Errorf("cpu %v", cpu)
		case ws == nil || ws.Value.Value < held:
			return fmt.Errorf("working set %v", ws)
		case thr == nil || thr.Value.Value == 0:
			return fmt.Errorf("throttled periods %v", thr)
		}
		return nil
	})
	if _, ok := pm.containers[created.ContainerId]; ok || len(pm.containers) != 1 {
		t.Errorf("metrics of containers %v, want only %s (the created one does not run)", slices.Collect(maps.Keys(pm.containers)), work)
	}

	// The pod's own: its eth0, labelled with the pod and no container.
	rx, tx := pm.pod["container_network_receive_bytes_total[eth0]"], pm.pod["container_network_transmit_packets_total[eth0]"]
	if rx == nil || rx.Value.Value < 3*98 || tx == nil || tx.Value.Value < 3 {
		t.Errorf("pod's eth0 after 3 pings: rx bytes %v, tx packets %v", rx, tx)
	} else if want := []string{podCfg.Metadata.Name, podCfg.Metadata.Namespace, "", pod, "", "eth0"}; !slices.Equal(rx.LabelValues, want) || rx.MetricType != runtimeapi.MetricType_COUNTER {
		t.Errorf("pod network metric %v, want labels %v, a counter", rx, want)
	}

	c := pm.containers[work]
	get := func(key string) uint64 {
		t.Helper()
		m := c[key]
		if m == nil {
			t.Errorf("no %s", key)
			return 0
		}
		if m.Timestamp == 0 {
			t.Errorf("%s has no timestamp", key)
		}
		return m.Value.Value
	}
	if want := []string{podCfg.Metadata.Name, podCfg.Metadata.Namespace, "work", work, ref}; !slices.Equal(c["container_memory_rss[]"].GetLabelValues(), want) {
		t.Errorf("labels %v, want %v", c["container_memory_rss[]"].GetLabelValues(), want)
	}
	if u, ws, rss := get("container_memory_usage_bytes[]"), get("container_memory_working_set_bytes[]"), get("container_memory_rss[]"); u < ws || rss < held {
		t.Errorf("memory usage %d, working set %d, rss %d", u, ws, rss)
	}
	if max, u := get("container_memory_max_usage_bytes[]"), get("container_memory_usage_bytes[]"); max < u {
		t.Errorf("max usage %d below usage %d", max, u)
	}
	if get("container_memory_failures_total[pgfault container]") == 0 {
		t.Error("no page faults")
	}
	if user, total := get("container_cpu_user_seconds_total[]"), get("container_cpu_usage_seconds_total[]"); user > total {
		t.Errorf("user cpu %ds above total %ds", user, total)
	}
	// sh, and in it the busy loop: one process at least, the shell's
	// stdio and no socket.
	if n := get("container_processes[]"); n < 1 || n > 3 {
		t.Errorf("processes %d", n)
	}
	if th, fds := get("container_threads[]"), get("container_file_descriptors[]"); th < 1 || fds < 3 {
		t.Errorf("threads %d, file descriptors %d", th, fds)
	}
	if s := get("container_sockets[]"); s != 0 {
		t.Errorf("sockets %d", s)
	}
	for key, want := range map[string]uint64{
		"container_spec_cpu_period[]":              100000,
		"container_spec_cpu_shares[]":              512,
		"container_spec_memory_limit_bytes[]":      limit,
		"container_spec_memory_swap_limit_bytes[]": limit,
	} {
		if got := get(key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
	var fsUsage *runtimeapi.Metric
	for key, m := range c {
		if m.Name == "container_fs_usage_bytes" {
			fsUsage = c[key]
		}
	}
	if fsUsage == nil || fsUsage.Value.Value < 2<<20 {
		t.Errorf("fs usage %v, want the 2 MiB written", fsUsage)
	} else {
		dev := fsUsage.LabelValues[5]
		if lim, free := get("container_fs_limit_bytes["+dev+"]"), get("container_fs_inodes_free["+dev+"]"); lim < fsUsage.Value.Value || free == 0 {
			t.Errorf("fs limit %d, inodes free %d", lim, free)
		}
	}
	now := uint64(time.Now().Unix())
	if start, seen := get("container_start_time_seconds[]"), get("container_last_seen[]"); start == 0 || start > seen || seen > now+1 || now-seen > uint64(settle/time.Second) {
		t.Errorf("start time %d, last seen %d, now %d", start, seen, now)
	}

	// A stopped pod is left out.
	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := podMetrics(t, rs, pod, descs); err == nil || !strings.Contains(err.Error(), "not in") {
		t.Errorf("a stopped pod's metrics: %v, want it left out", err)
	}
}
