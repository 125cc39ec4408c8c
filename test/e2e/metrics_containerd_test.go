package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// containerd is a containerd (Debian's, 1.6) started by a test on a
// scratch root, with its metrics on a loopback port, CRI off.
type containerd struct {
	dir, ns, metrics string
}

func (c *containerd) socket() string { return filepath.Join(c.dir, "c.sock") }

func (c *containerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.socket(), "-n", c.ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startContainerd runs containerd until the test ends; at cleanup its
// tasks and containers go, then containerd, any shim left and any mount
// left under its dir.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	for _, bin := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			testkit.SkipOrFail(t, "%s: %v (apt-get install containerd)", bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "kc")
	if err != nil {
		t.Fatal(err)
	}
	// The namespace is the tasks' cgroup parent: named as runtimePlugin's
	// parents, removed the same way.
	c := &containerd{dir: dir, ns: "keel-e2e-" + filepath.Base(dir), metrics: deadAddr(t)}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[metrics]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.socket(), c.socket()+".ttrpc", c.metrics)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), settle)
		defer cancel()
		ctr := func(args ...string) []byte {
			out, _ := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.socket(), "-n", c.ns}, args...)...).Output()
			return out
		}
		for _, id := range strings.Fields(string(ctr("containers", "ls", "-q"))) {
			ctr("tasks", "rm", "-f", id)
			ctr("containers", "rm", id)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(settle):
			cmd.Process.Kill()
			<-done
		}
		// A shim names containerd's socket, under dir, in its arguments.
		for _, pid := range pidsWithArgPrefix(dir + "/") {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); err == nil {
			slices.SortFunc(ms, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
			for _, m := range ms {
				unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
			}
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "containerd.log")); err == nil {
				t.Logf("containerd log:\n%s", b)
			}
		}
		os.RemoveAll(dir)
		// ctr gives each task the cgroup /<namespace>/<id>: the
		// namespace's is the parent left.
		removeCgroupParent(filepath.Base(dir))
	})
	eventually(t, settle, "containerd answers", func() error {
		select {
		case <-done:
			return fmt.Errorf("containerd exited: %v", cmd.ProcessState)
		default:
		}
		return exec.Command("ctr", "-a", c.socket(), "version").Run()
	})
	return c
}

// pidsWithArgPrefix lists the processes with an argument under prefix.
func pidsWithArgPrefix(prefix string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if slices.ContainsFunc(strings.Split(string(b), "\x00"), func(a string) bool { return strings.HasPrefix(a, prefix) }) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestMetricsAsContainerd: the same busybox task on keel and on a real
// containerd, both scraped: every container_* family containerd exports
// for its task, keel exports for its own with the same name, HELP, type
// and label names (and no family containerd lacks but the OOM count, which
// containerd 1.6 counts only for its v1 shims' tasks). The runtime label's
// value differs: containerd's runtime (io.containerd.runc.v2) vs keel's
// runtime plugin (runc).
func TestMetricsAsContainerd(t *testing.T) {
	t.Parallel()
	k, url := metricsKeeld(t)
	c := startContainerd(t)
	k.ok("image", "pull", "-q", "--snapshotter", "overlay", k.ref)
	k.ok("run", "-d", "--snapshotter", "overlay", k.ref, "same", "/bin/busybox", "sleep", "100000")
	c.ctr(t, "images", "pull", "--plain-http", k.ref)
	c.ctr(t, "run", "-d", "--snapshotter", "overlayfs", k.ref, "same", "/bin/busybox", "sleep", "100000")

	var theirs map[string]*dto.MetricFamily
	eventually(t, settle, "containerd's metrics of its task", func() error {
		theirs = scrapeMetrics(t, "http://"+c.metrics+"/v1/metrics").containerFamilies("same")
		if theirs["container_cpu_total_nanoseconds"] == nil {
			return fmt.Errorf("%d families", len(theirs))
		}
		return nil
	})
	ours := scrapeMetrics(t, url).containerFamilies("same")
	labelNames := func(f *dto.MetricFamily) []string {
		var out []string
		for _, m := range f.GetMetric() {
			if labels(m)["container_id"] != "same" {
				continue
			}
			for _, l := range m.GetLabel() {
				out = append(out, l.GetName())
			}
			break
		}
		slices.Sort(out)
		return out
	}
	for name, want := range theirs {
		got := ours[name]
		if got == nil {
			t.Errorf("%s: containerd exports it, keel does not", name)
			continue
		}
		if got.GetHelp() != want.GetHelp() || got.GetType() != want.GetType() {
			t.Errorf("%s: keel %q %v, containerd %q %v", name, got.GetHelp(), got.GetType(), want.GetHelp(), want.GetType())
		}
		if g, w := labelNames(got), labelNames(want); !slices.Equal(g, w) {
			t.Errorf("%s: keel's labels %v, containerd's %v", name, g, w)
		}
	}
	for name := range ours {
		if theirs[name] == nil && name != "container_memory_oom_total" {
			t.Errorf("%s: keel exports it, containerd does not", name)
		}
	}
	t.Logf("%d families compared", len(theirs))
}
