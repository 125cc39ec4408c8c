package metrics

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/runtime/cgmetrics"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestTasksCgroupV2: a real cgroup v2's metrics (a cgroup2 hierarchy
// mounted in a temp dir, a child cgroup, a busybox process working in it)
// come out under containerd's v2 names. This host runs containers on v1,
// its v2 hierarchy has no controller enabled (they are all bound to v1), so
// only the core files answer: cpu.stat (usage, user, system). The memory,
// pids and io families of v2 are checked from messages (cgmetrics' tests).
func TestTasksCgroupV2(t *testing.T) {
	testkit.RequireRoot(t, "mounts cgroup2")
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		testkit.SkipOrFail(t, "busybox: %v (apt-get install busybox-static)", err)
	}
	mnt := t.TempDir()
	if err := unix.Mount("none", mnt, "cgroup2", 0, ""); err != nil {
		testkit.SkipOrFail(t, "mount cgroup2: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	group := "/keel-metrics-test-" + strconv.Itoa(os.Getpid())
	if err := os.Mkdir(filepath.Join(mnt, group), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(filepath.Join(mnt, group)); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})

	// The process waits for its stdin, so it works only once in the
	// cgroup.
	cmd := exec.Command(busybox, "sh", "-c", "read go; head -c 20000000 /dev/urandom | "+busybox+" md5sum")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := os.WriteFile(filepath.Join(mnt, group, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}

	cg, err := cgroup2.Load(group, cgroup2.WithMountpoint(mnt))
	if err != nil {
		t.Fatal(err)
	}
	src := source{tasks: running("v2"), stats: func(context.Context, Task) (runtime.Stats, error) {
		m, err := cg.Stat()
		if err != nil {
			return runtime.Stats{}, err
		}
		b, err := proto.Marshal(m)
		return runtime.Stats{TypeURL: cgmetrics.TypeURLV2, Data: b}, err
	}}
	fams := gather(t, NewTasks(t.Context(), src, nil, TaskOptions{}))
	task := map[string]string{"container_id": "v2", "namespace": "default"}
	for _, name := range []string{"container_cpu_usage_usec_microseconds", "container_cpu_user_usec_microseconds", "container_cpu_system_usec_microseconds"} {
		if _, ok := value(fams, name, task); !ok {
			t.Errorf("%s: missing", name)
		}
	}
	if v, _ := value(fams, "container_cpu_usage_usec_microseconds", task); v < 1000 {
		t.Errorf("cpu usage %v µs after hashing 20 MB", v)
	}
	v2names := map[string]bool{cgmetrics.OOM.Name: true}
	for _, d := range cgmetrics.V2Descs() {
		v2names[d.Name] = true
	}
	for name := range fams {
		if strings.HasPrefix(name, "container_") && !v2names[name] {
			t.Errorf("%s: not a containerd v2 name", name)
		}
	}
	if v, _ := value(fams, "keel_task_stats_errors_total", nil); v != 0 {
		t.Errorf("stats errors: %v", v)
	}
}
