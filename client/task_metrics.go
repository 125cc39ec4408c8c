package client

import (
	"google.golang.org/protobuf/proto"

	"github.com/keel-runtime/keel/sdk/runtime/cgmetrics"
)

// Sample is one of a task's metrics, named and labelled as keeld's
// /metrics and containerd's export it.
type Sample struct {
	Name string `json:"name"`
	// Labels are the metric's labels, container_id and namespace first.
	Labels []Label `json:"labels"`
	Value  float64 `json:"value"`
	Type   string  `json:"type"` // gauge or counter
	Help   string  `json:"help"`
}

// Label is a metric's label.
type Label struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Samples decodes the metrics of the task id of namespace ns into the
// samples keeld's /metrics exports for it (less the OOM count on cgroup v1,
// which keeld counts from the task's events).
func (m Metrics) Samples(ns, id string) ([]Sample, error) {
	ss, err := cgmetrics.Decode(m.TypeURL, m.Data)
	if err != nil {
		return nil, err
	}
	out := make([]Sample, 0, len(ss))
	for _, s := range ss {
		labels := []Label{{cgmetrics.LabelContainerID, id}, {cgmetrics.LabelNamespace, ns}}
		for i, n := range s.Labels {
			labels = append(labels, Label{n, s.LabelValues[i]})
		}
		typ := "gauge"
		if s.Counter {
			typ = "counter"
		}
		out = append(out, Sample{Name: s.Name, Labels: labels, Value: s.Value, Type: typ, Help: s.Help})
	}
	return out, nil
}

// Unmarshal decodes the metrics into the cgroup message they carry:
// *stats.Metrics of containerd/cgroups/v3's cgroup1/stats on a cgroup v1
// host, of cgroup2/stats on v2. Callers switch on the type.
func (m Metrics) Unmarshal() (proto.Message, error) {
	return cgmetrics.Unmarshal(m.TypeURL, m.Data)
}
