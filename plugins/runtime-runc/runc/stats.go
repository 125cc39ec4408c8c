package runc

import (
	"fmt"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"google.golang.org/protobuf/proto"

	"github.com/keel-runtime/keel/sdk/errdefs"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// Type URLs of Stats.Data, as containerd names the same messages.
const (
	TypeURLCgroupV1 = "io.containerd.cgroups.v1.Metrics"
	TypeURLCgroupV2 = "io.containerd.cgroups.v2.Metrics"
)

// cgroupStats returns the metrics of a task's cgroup. The plugin reads
// them itself: the cgroup is the host's, and containerd/cgroups' metrics
// are protobuf messages, which the shim does not link. Containers get
// cgroup v2 only when /sys/fs/cgroup itself is the v2 hierarchy (runc's
// choice: a hybrid host runs them on v1).
func cgroupStats(path string) (keelruntime.Stats, error) {
	var msg proto.Message
	typeURL := TypeURLCgroupV1
	if cgroups.Mode() == cgroups.Unified {
		typeURL = TypeURLCgroupV2
		m, err := cgroup2.Load(path)
		if err == nil {
			msg, err = m.Stat()
		}
		if err != nil {
			return keelruntime.Stats{}, fmt.Errorf("cgroup %s: %v: %w", path, err, errdefs.ErrNotFound)
		}
	} else {
		cg, err := cgroup1.Load(cgroup1.StaticPath(path))
		if err == nil {
			msg, err = cg.Stat(cgroup1.IgnoreNotExist)
		}
		if err != nil {
			return keelruntime.Stats{}, fmt.Errorf("cgroup %s: %v: %w", path, err, errdefs.ErrNotFound)
		}
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		return keelruntime.Stats{}, err
	}
	return keelruntime.Stats{TypeURL: typeURL, Data: data}, nil
}
