package cgmetrics

import (
	"bufio"
	"os"
	"slices"
	"strings"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"google.golang.org/protobuf/proto"
)

// TestNamesAsContainerd: every family has containerd's name, help, type
// and labels, in its order. The golden files were read out of containerd's
// own definitions (core/metrics/cgroups/v1 and v2 of containerd v2.4.2,
// whose v1 names are those containerd 1.6.20 exports here).
func TestNamesAsContainerd(t *testing.T) {
	for _, c := range []struct {
		golden string
		descs  []*Desc
	}{
		{"testdata/containerd-v1.txt", V1Descs()},
		{"testdata/containerd-v2.txt", V2Descs()},
	} {
		t.Run(c.golden, func(t *testing.T) {
			want := readGolden(t, c.golden)
			var got []string
			for _, d := range c.descs {
				typ := "gauge"
				if d.Counter {
					typ = "counter"
				}
				got = append(got, strings.Join([]string{d.Name, d.Help, typ, strings.Join(d.Labels, ",")}, "\t"))
			}
			if !slices.Equal(got, want) {
				for i := range max(len(got), len(want)) {
					var g, w string
					if i < len(got) {
						g = got[i]
					}
					if i < len(want) {
						w = want[i]
					}
					if g != w {
						t.Errorf("family %d:\n got %q\nwant %q", i, g, w)
					}
				}
			}
		})
	}
}

func readGolden(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "#") {
			out = append(out, sc.Text())
		}
	}
	return out
}

func marshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecode: messages with any part missing decode to the families of
// the parts present (no part, no family; never a crash on what a runtime
// leaves out), with their labels; unknown types and bad bytes are refused.
func TestDecode(t *testing.T) {
	entry := &v1.MemoryEntry{Usage: 7}
	for _, c := range []struct {
		name    string
		typeURL string
		msg     proto.Message
		want    map[string]float64 // name{own label values} → value
		n       int                // samples
	}{
		{name: "v1 empty", typeURL: TypeURLV1, msg: &v1.Metrics{}},
		{name: "v2 empty", typeURL: TypeURLV2, msg: &v2.Metrics{}},
		{name: "v1 cpu without usage", typeURL: TypeURLV1, msg: &v1.Metrics{CPU: &v1.CPUStat{}}, n: 6, want: map[string]float64{"container_cpu_total_nanoseconds": 0}},
		{name: "v1 memory usage only", typeURL: TypeURLV1, msg: &v1.Metrics{Memory: &v1.MemoryStat{Usage: entry}}, n: 32 + 4,
			want: map[string]float64{"container_memory_usage_usage_bytes": 7}},
		{name: "v1 blkio and per cpu", typeURL: TypeURLV1, msg: &v1.Metrics{
			CPU:   &v1.CPUStat{Usage: &v1.CPUUsage{PerCPU: []uint64{5, 6}}},
			Blkio: &v1.BlkIOStat{IoServiceBytesRecursive: []*v1.BlkIOEntry{{Op: "Read", Device: "/dev/sda", Major: 8, Minor: 0, Value: 4096}}},
		}, n: 6 + 2 + 1, want: map[string]float64{
			"container_per_cpu_nanoseconds{1}":                                    6,
			"container_blkio_io_service_bytes_recursive_bytes{Read,/dev/sda,8,0}": 4096,
		}},
		{name: "v1 hugetlb", typeURL: TypeURLV1, msg: &v1.Metrics{Hugetlb: []*v1.HugetlbStat{{Pagesize: "2MB", Usage: 3}}}, n: 3,
			want: map[string]float64{"container_hugetlb_usage_bytes{2MB}": 3}},
		{name: "v2 io and oom", typeURL: TypeURLV2, msg: &v2.Metrics{
			Io: &v2.IOStat{Usage: []*v2.IOEntry{{Major: 8, Minor: 16, Rbytes: 9}}}, MemoryEvents: &v2.MemoryEvents{Oom: 2},
		}, n: 4 + 1, want: map[string]float64{"container_io_rbytes_bytes{8,16}": 9, "container_memory_oom_total": 2}},
		{name: "v2 cpu and memory", typeURL: TypeURLV2, msg: &v2.Metrics{CPU: &v2.CPUStat{UsageUsec: 11}, Memory: &v2.MemoryStat{Usage: 12}, Pids: &v2.PidsStat{Limit: 13}},
			n: 2 + 6 + 35, want: map[string]float64{"container_cpu_usage_usec_microseconds": 11, "container_memory_usage_bytes": 12, "container_pids_limit": 13}},
	} {
		t.Run(c.name, func(t *testing.T) {
			samples, err := Decode(c.typeURL, marshal(t, c.msg))
			if err != nil {
				t.Fatal(err)
			}
			if len(samples) != c.n {
				t.Errorf("%d samples, want %d", len(samples), c.n)
			}
			got := map[string]float64{}
			for _, s := range samples {
				if len(s.LabelValues) != len(s.Labels) {
					t.Errorf("%s: label values %v for %v", s.Name, s.LabelValues, s.Labels)
				}
				key := s.Name
				if len(s.LabelValues) > 0 {
					key += "{" + strings.Join(s.LabelValues, ",") + "}"
				}
				got[key] = s.Value
			}
			for k, v := range c.want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
				}
			}
		})
	}
	for _, c := range []struct {
		typeURL string
		data    []byte
	}{
		{"io.containerd.cgroups.v3.Metrics", nil},
		{TypeURLV1, []byte{0xff, 0xff, 0xff}},
		{TypeURLV2, []byte("not protobuf")},
	} {
		if _, err := Decode(c.typeURL, c.data); err == nil {
			t.Errorf("Decode(%q, %q): no error", c.typeURL, c.data)
		}
	}
}
