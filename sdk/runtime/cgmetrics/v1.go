package cgmetrics

import (
	"strconv"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
)

// v1Metrics are containerd's cgroup v1 families, in its order: pids, cpu,
// memory, hugetlb, blkio.
var v1Metrics = concat(
	[]metric[*v1.Metrics]{
		gauge("pids", "limit", "The limit to the number of pids allowed", func(m *v1.Metrics) (uint64, bool) { return m.GetPids().GetLimit(), m.Pids != nil }),
		gauge("pids", "current", "The current number of pids", func(m *v1.Metrics) (uint64, bool) { return m.GetPids().GetCurrent(), m.Pids != nil }),
		v1CPU("cpu_total", nanos, "The total cpu time", func(c *v1.CPUStat) uint64 { return c.GetUsage().GetTotal() }),
		v1CPU("cpu_kernel", nanos, "The total kernel cpu time", func(c *v1.CPUStat) uint64 { return c.GetUsage().GetKernel() }),
		v1CPU("cpu_user", nanos, "The total user cpu time", func(c *v1.CPUStat) uint64 { return c.GetUsage().GetUser() }),
		{desc: desc("per_cpu", nanos, "The total cpu time per cpu", "cpu"), values: func(m *v1.Metrics) []value {
			var out []value
			for i, v := range m.GetCPU().GetUsage().GetPerCPU() {
				out = append(out, value{v: float64(v), l: []string{strconv.Itoa(i)}})
			}
			return out
		}},
		v1CPU("cpu_throttle_periods", total, "The total cpu throttle periods", func(c *v1.CPUStat) uint64 { return c.GetThrottling().GetPeriods() }),
		v1CPU("cpu_throttled_periods", total, "The total cpu throttled periods", func(c *v1.CPUStat) uint64 { return c.GetThrottling().GetThrottledPeriods() }),
		v1CPU("cpu_throttled_time", nanos, "The total cpu throttled time", func(c *v1.CPUStat) uint64 { return c.GetThrottling().GetThrottledTime() }),
	},
	v1Memory(),
	[]metric[*v1.Metrics]{
		v1Hugetlb("hugetlb_usage", bytes, "The hugetlb usage", func(h *v1.HugetlbStat) uint64 { return h.Usage }),
		v1Hugetlb("hugetlb_failcnt", total, "The hugetlb failcnt", func(h *v1.HugetlbStat) uint64 { return h.Failcnt }),
		v1Hugetlb("hugetlb_max", bytes, "The hugetlb maximum usage", func(h *v1.HugetlbStat) uint64 { return h.Max }),
		v1Blkio("blkio_io_merged_recursive", total, "The blkio io merged recursive", func(b *v1.BlkIOStat) []*v1.BlkIOEntry { return b.IoMergedRecursive }),
		v1Blkio("blkio_io_queued_recursive", total, "The blkio io queued recursive", func(b *v1.BlkIOStat) []*v1.BlkIOEntry { return b.IoQueuedRecursive }),
		v1Blkio("blkio_io_service_bytes_recursive", bytes, "The blkio io service bytes recursive", func(b *v1.BlkIOStat) []*v1.BlkIOEntry { return b.IoServiceBytesRecursive }),
		v1Blkio("blkio_io_service_time_recursive", total, "The blkio io service time recursive", func(b *v1.BlkIOStat) []*v1.BlkIOEntry { return b.IoServiceTimeRecursive }),
		v1Blkio("blkio_io_serviced_recursive", total, "The blkio io serviced recursive", func(b *v1.BlkIOStat) []*v1.BlkIOEntry { return b.IoServicedRecursive }),
		v1Blkio("blkio_io_time_recursive", total, "The blkio io time recursive", func(b *v1.BlkIOStat) []*v1.BlkIOEntry { return b.IoTimeRecursive }),
		v1Blkio("blkio_sectors_recursive", total, "The blkio sectors recursive", func(b *v1.BlkIOStat) []*v1.BlkIOEntry { return b.SectorsRecursive }),
	},
)

func concat[M any](lists ...[]metric[M]) []metric[M] {
	var out []metric[M]
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func v1CPU(name, unit, help string, get func(*v1.CPUStat) uint64) metric[*v1.Metrics] {
	return gauge(name, unit, help, func(m *v1.Metrics) (uint64, bool) { return present(m.CPU, get) })
}

func v1Hugetlb(name, unit, help string, get func(*v1.HugetlbStat) uint64) metric[*v1.Metrics] {
	return metric[*v1.Metrics]{desc: desc(name, unit, help, "page"), values: func(m *v1.Metrics) []value {
		var out []value
		for _, h := range m.Hugetlb {
			out = append(out, value{v: float64(get(h)), l: []string{h.Pagesize}})
		}
		return out
	}}
}

func v1Blkio(name, unit, help string, get func(*v1.BlkIOStat) []*v1.BlkIOEntry) metric[*v1.Metrics] {
	return metric[*v1.Metrics]{desc: desc(name, unit, help, "op", "device", "major", "minor"), values: func(m *v1.Metrics) []value {
		if m.Blkio == nil {
			return nil
		}
		var out []value
		for _, e := range get(m.Blkio) {
			out = append(out, value{v: float64(e.Value), l: []string{e.Op, e.Device, strconv.FormatUint(e.Major, 10), strconv.FormatUint(e.Minor, 10)}})
		}
		return out
	}}
}

// v1Memory are the memory families: memory.stat's fields, then the usage,
// swap, kernel and kernel TCP counters (each present when the cgroup has it).
func v1Memory() []metric[*v1.Metrics] {
	stat := func(name, help string, get func(*v1.MemoryStat) uint64) metric[*v1.Metrics] {
		return gauge("memory_"+name, bytes, help, func(m *v1.Metrics) (uint64, bool) { return present(m.Memory, get) })
	}
	out := []metric[*v1.Metrics]{
		stat("cache", "The cache amount used", func(s *v1.MemoryStat) uint64 { return s.Cache }),
		stat("rss", "The rss amount used", func(s *v1.MemoryStat) uint64 { return s.RSS }),
		stat("rss_huge", "The rss_huge amount used", func(s *v1.MemoryStat) uint64 { return s.RSSHuge }),
		stat("mapped_file", "The mapped_file amount used", func(s *v1.MemoryStat) uint64 { return s.MappedFile }),
		stat("dirty", "The dirty amount", func(s *v1.MemoryStat) uint64 { return s.Dirty }),
		stat("writeback", "The writeback amount", func(s *v1.MemoryStat) uint64 { return s.Writeback }),
		stat("pgpgin", "The pgpgin amount", func(s *v1.MemoryStat) uint64 { return s.PgPgIn }),
		stat("pgpgout", "The pgpgout amount", func(s *v1.MemoryStat) uint64 { return s.PgPgOut }),
		stat("pgfault", "The pgfault amount", func(s *v1.MemoryStat) uint64 { return s.PgFault }),
		stat("pgmajfault", "The pgmajfault amount", func(s *v1.MemoryStat) uint64 { return s.PgMajFault }),
		stat("inactive_anon", "The inactive_anon amount", func(s *v1.MemoryStat) uint64 { return s.InactiveAnon }),
		stat("active_anon", "The active_anon amount", func(s *v1.MemoryStat) uint64 { return s.ActiveAnon }),
		stat("inactive_file", "The inactive_file amount", func(s *v1.MemoryStat) uint64 { return s.InactiveFile }),
		stat("active_file", "The active_file amount", func(s *v1.MemoryStat) uint64 { return s.ActiveFile }),
		stat("unevictable", "The unevictable amount", func(s *v1.MemoryStat) uint64 { return s.Unevictable }),
		stat("hierarchical_memory_limit", "The hierarchical_memory_limit amount", func(s *v1.MemoryStat) uint64 { return s.HierarchicalMemoryLimit }),
		stat("hierarchical_memsw_limit", "The hierarchical_memsw_limit amount", func(s *v1.MemoryStat) uint64 { return s.HierarchicalSwapLimit }),
		stat("total_cache", "The total_cache amount used", func(s *v1.MemoryStat) uint64 { return s.TotalCache }),
		stat("total_rss", "The total_rss amount used", func(s *v1.MemoryStat) uint64 { return s.TotalRSS }),
		stat("total_rss_huge", "The total_rss_huge amount used", func(s *v1.MemoryStat) uint64 { return s.TotalRSSHuge }),
		stat("total_mapped_file", "The total_mapped_file amount used", func(s *v1.MemoryStat) uint64 { return s.TotalMappedFile }),
		stat("total_dirty", "The total_dirty amount", func(s *v1.MemoryStat) uint64 { return s.TotalDirty }),
		stat("total_writeback", "The total_writeback amount", func(s *v1.MemoryStat) uint64 { return s.TotalWriteback }),
		stat("total_pgpgin", "The total_pgpgin amount", func(s *v1.MemoryStat) uint64 { return s.TotalPgPgIn }),
		stat("total_pgpgout", "The total_pgpgout amount", func(s *v1.MemoryStat) uint64 { return s.TotalPgPgOut }),
		stat("total_pgfault", "The total_pgfault amount", func(s *v1.MemoryStat) uint64 { return s.TotalPgFault }),
		stat("total_pgmajfault", "The total_pgmajfault amount", func(s *v1.MemoryStat) uint64 { return s.TotalPgMajFault }),
		stat("total_inactive_anon", "The total_inactive_anon amount", func(s *v1.MemoryStat) uint64 { return s.TotalInactiveAnon }),
		stat("total_active_anon", "The total_active_anon amount", func(s *v1.MemoryStat) uint64 { return s.TotalActiveAnon }),
		stat("total_inactive_file", "The total_inactive_file amount", func(s *v1.MemoryStat) uint64 { return s.TotalInactiveFile }),
		stat("total_active_file", "The total_active_file amount", func(s *v1.MemoryStat) uint64 { return s.TotalActiveFile }),
		stat("total_unevictable", "The total_unevictable amount", func(s *v1.MemoryStat) uint64 { return s.TotalUnevictable }),
	}
	// containerd's help names the counter ("usage") in failcnt's and the
	// subject ("memory") in the others'.
	for _, e := range []struct {
		name, subject string
		get           func(*v1.MemoryStat) *v1.MemoryEntry
	}{
		{"usage", "memory", (*v1.MemoryStat).GetUsage},
		{"swap", "swap", (*v1.MemoryStat).GetSwap},
		{"kernel", "kernel", (*v1.MemoryStat).GetKernel},
		{"kerneltcp", "kerneltcp", (*v1.MemoryStat).GetKernelTCP},
	} {
		entry := func(field, unit, help string, f func(*v1.MemoryEntry) uint64) metric[*v1.Metrics] {
			return gauge("memory_"+e.name+"_"+field, unit, help, func(m *v1.Metrics) (uint64, bool) {
				me := e.get(m.GetMemory())
				return f(me), me != nil
			})
		}
		out = append(out,
			entry("failcnt", total, "The "+e.name+" failcnt", (*v1.MemoryEntry).GetFailcnt),
			entry("limit", bytes, "The "+e.subject+" limit", (*v1.MemoryEntry).GetLimit),
			entry("max", bytes, "The "+e.subject+" maximum usage", (*v1.MemoryEntry).GetMax),
			entry("usage", bytes, "The "+e.subject+" usage", (*v1.MemoryEntry).GetUsage),
		)
	}
	return out
}
