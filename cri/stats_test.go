package cri

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/prometheus/procfs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestCPURate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name      string
		prev, cur cpuSample
		want      uint64
	}{
		{"one core busy", cpuSample{t0, 5e9}, cpuSample{t0.Add(2 * time.Second), 7e9}, 1e9},
		{"half a core", cpuSample{t0, 0}, cpuSample{t0.Add(4 * time.Second), 2e9}, 5e8},
		{"two cores over 100ms", cpuSample{t0, 1e9}, cpuSample{t0.Add(100 * time.Millisecond), 1.2e9}, 2e9},
		{"idle", cpuSample{t0, 3e9}, cpuSample{t0.Add(time.Second), 3e9}, 0},
		{"no time passed", cpuSample{t0, 1e9}, cpuSample{t0, 2e9}, 0},
		{"clock went back", cpuSample{t0, 1e9}, cpuSample{t0.Add(-time.Second), 2e9}, 0},
		{"counter went back: a new task", cpuSample{t0, 9e9}, cpuSample{t0.Add(time.Second), 1e8}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cpuRate(tc.prev, tc.cur); got != tc.want {
				t.Errorf("cpuRate = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestNanoCoresKeepsLastSample(t *testing.T) {
	var r cpuRates
	t0 := time.Unix(1000, 0)
	steps := []struct {
		id   string
		s    cpuSample
		want uint64
	}{
		{"a", cpuSample{t0, 1e9}, 0},                                // first sample: no rate yet
		{"b", cpuSample{t0, 50e9}, 0},                               // another container is apart
		{"a", cpuSample{t0.Add(time.Second), 1.5e9}, 5e8},           // against the first
		{"a", cpuSample{t0.Add(500 * time.Millisecond), 9e9}, 0},    // older than the last: ignored
		{"a", cpuSample{t0.Add(3 * time.Second), 3.5e9}, 1e9},       // against t0+1s, not the ignored one
		{"b", cpuSample{t0.Add(rateKeep + 4*time.Second), 50e9}, 0}, // idle b: no cpu used
		{"a", cpuSample{t0.Add(rateKeep + 5*time.Second), 4e9}, 0},  // a's was dropped by b's call
	}
	for i, st := range steps {
		if got := r.nanoCores(st.id, st.s); got != st.want {
			t.Errorf("step %d (%s): nanoCores = %d, want %d", i, st.id, got, st.want)
		}
	}
}

func TestWorkingSetAndAvailable(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		usage, inactive, lim  uint64
		wantWS, wantAvailable uint64
	}{
		{"cache counted out", 100 << 20, 30 << 20, 200 << 20, 70 << 20, 130 << 20},
		{"no cache", 64 << 20, 0, 128 << 20, 64 << 20, 64 << 20},
		{"inactive above usage", 10, 20, 100, 0, 100},
		{"no limit", 50 << 20, 10 << 20, 0x7FFFFFFFFFFFF000, 40 << 20, 0},
		{"over the limit", 300, 0, 200, 300, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := workingSet(tc.usage, tc.inactive)
			if ws != tc.wantWS {
				t.Errorf("workingSet = %d, want %d", ws, tc.wantWS)
			}
			if got := availableBytes(tc.lim, ws); got != tc.wantAvailable {
				t.Errorf("availableBytes = %d, want %d", got, tc.wantAvailable)
			}
		})
	}
}

func TestCRIUsage(t *testing.T) {
	at := time.Unix(1700000000, 42)
	type want struct {
		cpu                                        uint64
		ws, avail, usage, rss, faults, majorFaults uint64
	}
	for _, tc := range []struct {
		name    string
		m       proto.Message
		want    *want
		noCPU   bool
		noMem   bool
		wantErr bool
	}{
		{
			name: "cgroup v1",
			m: &v1.Metrics{
				CPU: &v1.CPUStat{Usage: &v1.CPUUsage{Total: 123456789}},
				Memory: &v1.MemoryStat{
					Usage:             &v1.MemoryEntry{Usage: 80 << 20, Limit: 256 << 20},
					TotalInactiveFile: 16 << 20, InactiveFile: 1, // the hierarchy's total counts
					TotalRSS: 60 << 20, RSS: 2, TotalPgFault: 1000, PgFault: 3, TotalPgMajFault: 7, PgMajFault: 4,
				},
			},
			want: &want{cpu: 123456789, ws: 64 << 20, avail: 192 << 20, usage: 80 << 20, rss: 60 << 20, faults: 1000, majorFaults: 7},
		},
		{
			name: "cgroup v2",
			m: &v2.Metrics{
				CPU:    &v2.CPUStat{UsageUsec: 2500},
				Memory: &v2.MemoryStat{Usage: 40 << 20, UsageLimit: 0xFFFFFFFFFFFFFFFF, InactiveFile: 8 << 20, Anon: 30 << 20, Pgfault: 500, Pgmajfault: 2},
			},
			want: &want{cpu: 2500000, ws: 32 << 20, avail: 0, usage: 40 << 20, rss: 30 << 20, faults: 500, majorFaults: 2},
		},
		{name: "v1 without controllers", m: &v1.Metrics{}, noCPU: true, noMem: true},
		{name: "v2 without controllers", m: &v2.Metrics{}, noCPU: true, noMem: true},
		{name: "another message", m: &emptypb.Empty{}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cpu, mem, err := criUsage(tc.m, at)
			if tc.wantErr {
				if !errdefs.IsNotImplemented(err) {
					t.Fatalf("err = %v, want NotImplemented", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.noCPU != (cpu == nil) || tc.noMem != (mem == nil) {
				t.Fatalf("cpu %v, memory %v", cpu, mem)
			}
			if tc.want == nil {
				return
			}
			w := tc.want
			if cpu.Timestamp != at.UnixNano() || mem.Timestamp != at.UnixNano() {
				t.Errorf("timestamps %d %d, want %d", cpu.Timestamp, mem.Timestamp, at.UnixNano())
			}
			got := want{
				cpu: cpu.GetUsageCoreNanoSeconds().GetValue(),
				ws:  mem.GetWorkingSetBytes().GetValue(), avail: mem.GetAvailableBytes().GetValue(),
				usage: mem.GetUsageBytes().GetValue(), rss: mem.GetRssBytes().GetValue(),
				faults: mem.GetPageFaults().GetValue(), majorFaults: mem.GetMajorPageFaults().GetValue(),
			}
			if got != *w {
				t.Errorf("got %+v\nwant %+v", got, *w)
			}
		})
	}
}

func TestSumUsage(t *testing.T) {
	a := &runtimeapi.CpuUsage{Timestamp: 10, UsageCoreNanoSeconds: u64(100)}
	am := &runtimeapi.MemoryUsage{Timestamp: 10, WorkingSetBytes: u64(1), AvailableBytes: u64(99), UsageBytes: u64(2), RssBytes: u64(3), PageFaults: u64(4), MajorPageFaults: u64(5)}
	b := &runtimeapi.CpuUsage{Timestamp: 20, UsageCoreNanoSeconds: u64(50)}
	bm := &runtimeapi.MemoryUsage{Timestamp: 5, WorkingSetBytes: u64(10), AvailableBytes: u64(99), UsageBytes: u64(20), RssBytes: u64(30), PageFaults: u64(40), MajorPageFaults: u64(50)}
	cpu, mem := sumUsage(nil, nil, a, am)
	cpu, mem = sumUsage(cpu, mem, nil, nil) // a container without figures
	cpu, mem = sumUsage(cpu, mem, b, bm)
	if cpu.Timestamp != 20 || cpu.UsageCoreNanoSeconds.Value != 150 {
		t.Errorf("cpu %v", cpu)
	}
	if mem.Timestamp != 10 || mem.WorkingSetBytes.Value != 11 || mem.UsageBytes.Value != 22 || mem.RssBytes.Value != 33 ||
		mem.PageFaults.Value != 44 || mem.MajorPageFaults.Value != 55 || mem.AvailableBytes != nil {
		t.Errorf("memory %v", mem)
	}
	if a.UsageCoreNanoSeconds.Value != 100 || am.WorkingSetBytes.Value != 1 {
		t.Error("the summands changed")
	}
	if cpu, mem := sumUsage(nil, nil, nil, nil); cpu != nil || mem != nil {
		t.Errorf("nothing summed: %v %v", cpu, mem)
	}
}

func TestMatchContainerStats(t *testing.T) {
	info := client.ContainerInfo{ID: "abc123", Labels: map[string]string{
		LabelSandboxID: "pod789", PrefixLabel + "app": "web", PrefixLabel + "tier": "front", "io.keel.cri/kind": "container",
	}}
	for _, tc := range []struct {
		name string
		f    *runtimeapi.ContainerStatsFilter
		want bool
	}{
		{"nil", nil, true},
		{"empty", &runtimeapi.ContainerStatsFilter{}, true},
		{"id", &runtimeapi.ContainerStatsFilter{Id: "abc123"}, true},
		{"id prefix", &runtimeapi.ContainerStatsFilter{Id: "abc"}, true},
		{"other id", &runtimeapi.ContainerStatsFilter{Id: "abd"}, false},
		{"pod", &runtimeapi.ContainerStatsFilter{PodSandboxId: "pod789"}, true},
		{"pod prefix", &runtimeapi.ContainerStatsFilter{PodSandboxId: "pod7"}, true},
		{"other pod", &runtimeapi.ContainerStatsFilter{PodSandboxId: "pod8"}, false},
		{"label", &runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"app": "web"}}, true},
		{"labels", &runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"app": "web", "tier": "front"}}, true},
		{"label value differs", &runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"app": "db"}}, false},
		{"keel's own label is not the CRI's", &runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"io.keel.cri/kind": "container"}}, false},
		{"all of them", &runtimeapi.ContainerStatsFilter{Id: "abc", PodSandboxId: "pod789", LabelSelector: map[string]string{"app": "web"}}, true},
		{"one of them fails", &runtimeapi.ContainerStatsFilter{Id: "abc", PodSandboxId: "other", LabelSelector: map[string]string{"app": "web"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := matchContainerStats(info, tc.f); got != tc.want {
				t.Errorf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPodNetwork reads this process's own namespace: every interface
// /proc/net/dev lists but lo, with its counters.
func TestPodNetwork(t *testing.T) {
	nu, err := podNetwork(uint32(os.Getpid()), 7)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	want, err := dev.NetDev()
	if err != nil {
		t.Fatal(err)
	}
	if nu.Timestamp != 7 || len(nu.Interfaces) != len(want)-1 {
		t.Fatalf("timestamp %d, %d interfaces; /proc/net/dev has %d with lo", nu.Timestamp, len(nu.Interfaces), len(want))
	}
	for _, i := range nu.Interfaces {
		w, ok := want[i.Name]
		if !ok || i.Name == "lo" {
			t.Errorf("interface %s", i.Name)
			continue
		}
		// Counters only grow between the two reads.
		if i.RxBytes.Value > w.RxBytes || i.TxBytes.Value > w.TxBytes {
			t.Errorf("%s: rx %d tx %d, then %d %d", i.Name, i.RxBytes.Value, i.TxBytes.Value, w.RxBytes, w.TxBytes)
		}
	}
	if _, ok := want[defaultIfName]; ok != (nu.DefaultInterface != nil) {
		t.Errorf("default interface %v; %s in /proc/net/dev: %v", nu.DefaultInterface, defaultIfName, ok)
	}
	if _, err := podNetwork(1<<22+1, 0); err == nil {
		t.Error("a pid that is not there gave no error")
	}
}

// TestGather: answers come in the order of the items whatever order the
// reads end in, nil ones left out, no more than statsConcurrency at once;
// an error ends the call.
func TestGather(t *testing.T) {
	items := make([]int, 40)
	for i := range items {
		items[i] = i
	}
	var running, most atomic.Int32
	out, err := gather(t.Context(), items, func(_ context.Context, i, it int) (*int, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Duration(len(items)-i) * 100 * time.Microsecond) // later items end first
		if it%3 == 0 {
			return nil, nil
		}
		return &items[i], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, p := range out {
		got = append(got, *p)
	}
	var want []int
	for _, it := range items {
		if it%3 != 0 {
			want = append(want, it)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("gathered %v, want %v", got, want)
	}
	if m := most.Load(); m > statsConcurrency {
		t.Errorf("%d reads at once, want at most %d", m, statsConcurrency)
	}

	boom := errors.New("boom")
	if _, err := gather(t.Context(), items, func(_ context.Context, i, _ int) (*int, error) {
		if i == 7 {
			return nil, boom
		}
		return &items[i], nil
	}); !errors.Is(err, boom) {
		t.Errorf("gather with a failing read = %v, want %v", err, boom)
	}
}
