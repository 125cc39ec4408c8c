package shim

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// The shim watches its task's cgroup for OOM kills with the kernel's
// interfaces directly (v2: inotify on memory.events; v1: an eventfd on
// memory.oom_control): containerd/cgroups' cgroup1 and cgroup2 packages,
// which the plugin uses for Stats, bring protobuf, eBPF and D-Bus with
// them, about 1 MB more resident in every shim.

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// unified reports whether containers get cgroup v2 (runc's choice: only
// when /sys/fs/cgroup itself is the v2 hierarchy; a hybrid host, v1 with
// v2 beside it, runs them on v1).
func unified() bool { return cgroups.Mode() == cgroups.Unified }

// watchOOM publishes an oom event each time the kernel's OOM killer acts
// in the task's cgroup, until the cgroup goes.
func (s *Service) watchOOM() {
	if s.cfg.CgroupPath == "" {
		return
	}
	if unified() {
		s.watchOOMv2(filepath.Join(cgroupRoot, s.cfg.CgroupPath, "memory.events"))
		return
	}
	s.watchOOMv1(filepath.Join(cgroupRoot, "memory", s.cfg.CgroupPath))
}

// watchOOMv2 follows memory.events' oom_kill count.
func (s *Service) watchOOMv2(events string) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		return
	}
	var kills uint64
	buf := make([]byte, unix.SizeofInotifyEvent+unix.PathMax+1)
	for {
		if n := oomKills(events); n > kills {
			kills = n
			s.publishOOM()
		}
		n, err := f.Read(buf)
		if err != nil || n < unix.SizeofInotifyEvent {
			return
		}
		// IN_IGNORED: the watch went with the cgroup.
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			if mask&unix.IN_IGNORED != 0 {
				return
			}
			off += unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
		}
	}
}

// oomKills reads the oom_kill count of a memory.events file.
func oomKills(events string) uint64 {
	b, err := os.ReadFile(events)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// watchOOMv1 waits on an eventfd registered for memory.oom_control.
func (s *Service) watchOOMv1(memDir string) {
	ctl, err := os.Open(filepath.Join(memDir, "memory.oom_control"))
	if err != nil {
		return
	}
	defer ctl.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(efd), "oom-eventfd")
	defer f.Close()
	reg := strconv.Itoa(efd) + " " + strconv.Itoa(int(ctl.Fd()))
	if err := os.WriteFile(filepath.Join(memDir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		return
	}
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
	s.publish(Event{Topic: TopicOOM, ID: s.cfg.ID})
}
