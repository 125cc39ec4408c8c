package cgmetrics

import (
	"strconv"

	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// v2Metrics are containerd's cgroup v2 families, in its order: pids, cpu,
// memory, io.
var v2Metrics = concat(
	[]metric[*v2.Metrics]{
		gauge("pids", "limit", "The limit to the number of pids allowed (cgroup v2)", func(m *v2.Metrics) (uint64, bool) { return m.GetPids().GetLimit(), m.Pids != nil }),
		gauge("pids", "current", "The current number of pids (cgroup v2)", func(m *v2.Metrics) (uint64, bool) { return m.GetPids().GetCurrent(), m.Pids != nil }),
		v2CPU("cpu_usage_usec", micro, "Total cpu usage (cgroup v2)", func(c *v2.CPUStat) uint64 { return c.UsageUsec }),
		v2CPU("cpu_user_usec", micro, "Current cpu usage in user space (cgroup v2)", func(c *v2.CPUStat) uint64 { return c.UserUsec }),
		v2CPU("cpu_system_usec", micro, "Current cpu usage in kernel space (cgroup v2)", func(c *v2.CPUStat) uint64 { return c.SystemUsec }),
		v2CPU("cpu_nr_periods", total, "Current cpu number of periods (only if controller is enabled)", func(c *v2.CPUStat) uint64 { return c.NrPeriods }),
		v2CPU("cpu_nr_throttled", total, "Total number of times tasks have been throttled (only if controller is enabled)", func(c *v2.CPUStat) uint64 { return c.NrThrottled }),
		v2CPU("cpu_throttled_usec", micro, "Total time duration for which tasks have been throttled. (only if controller is enabled)", func(c *v2.CPUStat) uint64 { return c.ThrottledUsec }),
	},
	v2Memory(),
	[]metric[*v2.Metrics]{
		v2IO("io_rbytes", bytes, "IO bytes read", func(e *v2.IOEntry) uint64 { return e.Rbytes }),
		v2IO("io_wbytes", bytes, "IO bytes written", func(e *v2.IOEntry) uint64 { return e.Wbytes }),
		v2IO("io_rios", total, "Number of read IOs", func(e *v2.IOEntry) uint64 { return e.Rios }),
		v2IO("io_wios", total, "Number of write IOs", func(e *v2.IOEntry) uint64 { return e.Wios }),
	},
)

func v2CPU(name, unit, help string, get func(*v2.CPUStat) uint64) metric[*v2.Metrics] {
	return gauge(name, unit, help, func(m *v2.Metrics) (uint64, bool) { return present(m.CPU, get) })
}

func v2IO(name, unit, help string, get func(*v2.IOEntry) uint64) metric[*v2.Metrics] {
	return metric[*v2.Metrics]{desc: desc(name, unit, help, "major", "minor"), values: func(m *v2.Metrics) []value {
		var out []value
		for _, e := range m.GetIo().GetUsage() {
			out = append(out, value{v: float64(get(e)), l: []string{strconv.FormatUint(e.Major, 10), strconv.FormatUint(e.Minor, 10)}})
		}
		return out
	}}
}

// v2Memory are memory.current and .max, the swap pair, memory.stat's
// fields, and memory.events' oom count.
func v2Memory() []metric[*v2.Metrics] {
	stat := func(name, help string, get func(*v2.MemoryStat) uint64) metric[*v2.Metrics] {
		return gauge("memory_"+name, bytes, help, func(m *v2.Metrics) (uint64, bool) { return present(m.Memory, get) })
	}
	// memory.stat's fields, whose help containerd words alike.
	field := func(name string, get func(*v2.MemoryStat) uint64) metric[*v2.Metrics] {
		return stat(name, "The "+name+" amount", get)
	}
	return []metric[*v2.Metrics]{
		stat("usage", "Current memory usage (cgroup v2)", func(s *v2.MemoryStat) uint64 { return s.Usage }),
		stat("usage_limit", "Current memory usage limit (cgroup v2)", func(s *v2.MemoryStat) uint64 { return s.UsageLimit }),
		stat("swap_usage", "Current swap usage (cgroup v2)", func(s *v2.MemoryStat) uint64 { return s.SwapUsage }),
		stat("swap_limit", "Current swap usage limit (cgroup v2)", func(s *v2.MemoryStat) uint64 { return s.SwapLimit }),
		field("file_mapped", func(s *v2.MemoryStat) uint64 { return s.FileMapped }),
		field("file_dirty", func(s *v2.MemoryStat) uint64 { return s.FileDirty }),
		field("file_writeback", func(s *v2.MemoryStat) uint64 { return s.FileWriteback }),
		field("pgactivate", func(s *v2.MemoryStat) uint64 { return s.Pgactivate }),
		field("pgdeactivate", func(s *v2.MemoryStat) uint64 { return s.Pgdeactivate }),
		field("pgfault", func(s *v2.MemoryStat) uint64 { return s.Pgfault }),
		field("pgmajfault", func(s *v2.MemoryStat) uint64 { return s.Pgmajfault }),
		field("pglazyfree", func(s *v2.MemoryStat) uint64 { return s.Pglazyfree }),
		field("pgrefill", func(s *v2.MemoryStat) uint64 { return s.Pgrefill }),
		field("pglazyfreed", func(s *v2.MemoryStat) uint64 { return s.Pglazyfreed }),
		field("pgscan", func(s *v2.MemoryStat) uint64 { return s.Pgscan }),
		field("pgsteal", func(s *v2.MemoryStat) uint64 { return s.Pgsteal }),
		field("inactive_anon", func(s *v2.MemoryStat) uint64 { return s.InactiveAnon }),
		field("active_anon", func(s *v2.MemoryStat) uint64 { return s.ActiveAnon }),
		field("inactive_file", func(s *v2.MemoryStat) uint64 { return s.InactiveFile }),
		field("active_file", func(s *v2.MemoryStat) uint64 { return s.ActiveFile }),
		field("unevictable", func(s *v2.MemoryStat) uint64 { return s.Unevictable }),
		field("anon", func(s *v2.MemoryStat) uint64 { return s.Anon }),
		field("file", func(s *v2.MemoryStat) uint64 { return s.File }),
		field("kernel_stack", func(s *v2.MemoryStat) uint64 { return s.KernelStack }),
		field("slab", func(s *v2.MemoryStat) uint64 { return s.Slab }),
		field("sock", func(s *v2.MemoryStat) uint64 { return s.Sock }),
		field("shmem", func(s *v2.MemoryStat) uint64 { return s.Shmem }),
		field("anon_thp", func(s *v2.MemoryStat) uint64 { return s.AnonThp }),
		field("slab_reclaimable", func(s *v2.MemoryStat) uint64 { return s.SlabReclaimable }),
		field("slab_unreclaimable", func(s *v2.MemoryStat) uint64 { return s.SlabUnreclaimable }),
		field("workingset_refault", func(s *v2.MemoryStat) uint64 { return s.WorkingsetRefault }),
		field("workingset_activate", func(s *v2.MemoryStat) uint64 { return s.WorkingsetActivate }),
		field("workingset_nodereclaim", func(s *v2.MemoryStat) uint64 { return s.WorkingsetNodereclaim }),
		field("thp_fault_alloc", func(s *v2.MemoryStat) uint64 { return s.ThpFaultAlloc }),
		field("thp_collapse_alloc", func(s *v2.MemoryStat) uint64 { return s.ThpCollapseAlloc }),
		{desc: OOMV2, values: func(m *v2.Metrics) []value {
			if m.MemoryEvents == nil {
				return nil
			}
			return []value{{v: float64(m.MemoryEvents.Oom)}}
		}},
	}
}

// OOMV2 is OOM as containerd exports it on cgroup v2: a gauge read from the
// cgroup's memory.events.
var OOMV2 = &Desc{Name: OOM.Name, Help: OOM.Help}
