package shim

import (
	"fmt"
	"os"
	"strings"

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

// unified reports whether containers get cgroup v2 (runc's choice: only
// when /sys/fs/cgroup itself is the v2 hierarchy; a hybrid host, v1 with
// v2 beside it, runs them on v1).
func unified() bool { return cgroups.Mode() == cgroups.Unified }

// Stats returns the task's cgroup metrics.
func (s *Service) Stats(_ Empty, reply *StatsReply) error {
	s.mu.Lock()
	_, err := s.proc("")
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	var msg proto.Message
	typeURL := TypeURLCgroupV1
	if unified() {
		typeURL = TypeURLCgroupV2
		m, err := cgroup2.Load(s.cfg.CgroupPath)
		if err == nil {
			msg, err = m.Stat()
		}
		if err != nil {
			return wireError(fmt.Errorf("cgroup %s: %v: %w", s.cfg.CgroupPath, err, errdefs.ErrNotFound))
		}
	} else {
		cg, err := cgroup1.Load(cgroup1.StaticPath(s.cfg.CgroupPath))
		if err == nil {
			msg, err = cg.Stat(cgroup1.IgnoreNotExist)
		}
		if err != nil {
			return wireError(fmt.Errorf("cgroup %s: %v: %w", s.cfg.CgroupPath, err, errdefs.ErrNotFound))
		}
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		return wireError(err)
	}
	reply.Stats = keelruntime.Stats{TypeURL: typeURL, Data: data}
	return nil
}

// watchOOM publishes an oom event each time the kernel's OOM killer acts
// in the task's cgroup, until the cgroup goes.
func (s *Service) watchOOM() {
	if s.cfg.CgroupPath == "" {
		return
	}
	if unified() {
		m, err := cgroup2.Load(s.cfg.CgroupPath)
		if err != nil {
			return
		}
		events, errs := m.EventChan()
		var kills uint64
		for {
			select {
			case ev := <-events:
				if ev.OOMKill > kills {
					kills = ev.OOMKill
					s.publishOOM()
				}
			case <-errs:
				return
			case <-s.done:
				return
			}
		}
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(s.cfg.CgroupPath))
	if err != nil {
		return
	}
	fd, err := cg.OOMEventFD()
	if err != nil {
		return
	}
	f := os.NewFile(fd, "oom-eventfd")
	defer f.Close()
	memDir := "/sys/fs/cgroup/memory/" + strings.TrimPrefix(s.cfg.CgroupPath, "/")
	buf := make([]byte, 8)
	for {
		if _, err := f.Read(buf); err != nil {
			return
		}
		// The eventfd also fires when the cgroup is removed.
		if _, err := os.Stat(memDir); err != nil {
			return
		}
		s.publishOOM()
	}
}

func (s *Service) publishOOM() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deleted {
		return
	}
	s.publish(keelruntime.Event{Topic: keelruntime.TopicOOM, ID: s.cfg.ID})
}
