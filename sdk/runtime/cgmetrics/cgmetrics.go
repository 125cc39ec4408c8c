// Package cgmetrics names a task's cgroup metrics — the Stats a runtime
// plugin returns, containerd/cgroups' v1 or v2 Metrics message — exactly as
// containerd's metrics plugin names them (core/metrics/cgroups/v1 and v2):
// container_<subsystem>_<name>_<unit>, labelled container_id and namespace
// (and runtime, which the exporter adds: LabelRuntime) and then the
// metric's own labels (blkio's op, device, major, minor; per
// cpu's cpu; hugetlb's page), every one a gauge as containerd exports them.
// So dashboards made for containerd work unchanged over keel. keeld's
// collector (core/metrics) and `keel task metrics` share it.
package cgmetrics

import (
	"fmt"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"google.golang.org/protobuf/proto"
)

// Type URLs of a runtime's Stats.Data, as containerd names the messages.
const (
	TypeURLV1 = "io.containerd.cgroups.v1.Metrics"
	TypeURLV2 = "io.containerd.cgroups.v2.Metrics"
)

// Labels every container metric carries first, in this order.
const (
	LabelContainerID = "container_id"
	LabelNamespace   = "namespace"
)

// LabelRuntime is the constant label containerd adds to the metrics of a
// task's cgroup: the task's runtime (containerd's tasks service adds it
// to each task it monitors; its OOM count has none).
const LabelRuntime = "runtime"

// Desc describes one metric family.
type Desc struct {
	// Name is the full name, e.g. container_cpu_total_nanoseconds.
	Name string
	Help string
	// Counter is true for a counter; containerd's cgroup metrics are all
	// gauges, its OOM count is a counter.
	Counter bool
	// Labels are the metric's own label names, after container_id and
	// namespace.
	Labels []string
}

// Sample is one value of a metric.
type Sample struct {
	*Desc
	// LabelValues match Desc.Labels.
	LabelValues []string
	Value       float64
}

// OOM is the count of OOM events of a container. On cgroup v1 containerd
// counts the cgroup's OOM notifications (keeld counts the runtime's
// /tasks/oom events); on v2 it is the cgroup's memory.events oom field.
var OOM = &Desc{Name: "container_memory_oom_total", Help: "The number of times a container has received an oom event", Counter: true}

// Decode returns the samples of a runtime's Stats, in containerd's order.
// It refuses a type it does not know.
func Decode(typeURL string, data []byte) ([]Sample, error) {
	m, err := Unmarshal(typeURL, data)
	if err != nil {
		return nil, err
	}
	if m1, ok := m.(*v1.Metrics); ok {
		return V1(m1), nil
	}
	return V2(m.(*v2.Metrics)), nil
}

// Unmarshal decodes a runtime's Stats into the message typeURL names:
// *v1.Metrics (containerd/cgroups' cgroup1/stats) or *v2.Metrics
// (cgroup2/stats). It refuses a type it does not know.
func Unmarshal(typeURL string, data []byte) (proto.Message, error) {
	var m proto.Message
	switch typeURL {
	case TypeURLV1:
		m = &v1.Metrics{}
	case TypeURLV2:
		m = &v2.Metrics{}
	default:
		return nil, fmt.Errorf("unknown metrics type %q", typeURL)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", typeURL, err)
	}
	return m, nil
}

// V1 returns the samples of cgroup v1 metrics.
func V1(m *v1.Metrics) []Sample { return collect(m, v1Metrics) }

// V2 returns the samples of cgroup v2 metrics.
func V2(m *v2.Metrics) []Sample { return collect(m, v2Metrics) }

// metric is one family and how to read its values from a message.
type metric[M any] struct {
	desc   *Desc
	values func(M) []value
}

type value struct {
	v float64
	l []string
}

func collect[M any](m M, defs []metric[M]) []Sample {
	var out []Sample
	for _, d := range defs {
		for _, v := range d.values(m) {
			out = append(out, Sample{Desc: d.desc, LabelValues: v.l, Value: v.v})
		}
	}
	return out
}

// V1Descs lists the families V1 may return, in containerd's order.
func V1Descs() []*Desc { return descsOf(v1Metrics) }

// V2Descs lists the families V2 may return, in containerd's order.
func V2Descs() []*Desc { return descsOf(v2Metrics) }

func descsOf[M any](defs []metric[M]) []*Desc {
	out := make([]*Desc, 0, len(defs))
	for _, d := range defs {
		out = append(out, d.desc)
	}
	return out
}

// Units as docker/go-metrics spells them in names.
const (
	bytes = "bytes"
	total = "total"
	nanos = "nanoseconds"
	micro = "microseconds"
)

// gauge is a metric with one unlabelled value, present when get says so.
func gauge[M any](name, unit, help string, get func(M) (uint64, bool)) metric[M] {
	return metric[M]{desc: desc(name, unit, help), values: func(m M) []value {
		v, ok := get(m)
		if !ok {
			return nil
		}
		return []value{{v: float64(v)}}
	}}
}

func desc(name, unit, help string, labels ...string) *Desc {
	full := "container_" + name
	if unit != "" {
		full += "_" + unit
	}
	return &Desc{Name: full, Help: help, Labels: labels}
}

// present reads a field of s, a part of the message that may be missing
// (as a runtime leaves out what a cgroup lacks).
func present[S any](s *S, get func(*S) uint64) (uint64, bool) {
	if s == nil {
		return 0, false
	}
	return get(s), true
}
