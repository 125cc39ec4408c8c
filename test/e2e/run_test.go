package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// runtimePlugin is a runc runtime block with a cgroup parent of the test's
// own, so parallel keelds never share task cgroups.
func runtimePlugin(e *env) string {
	return fmt.Sprintf(`
plugin "runtime" "runc" {
  path = "keel-runtime-runc"
  config {
    cgroup_parent = "/keel-e2e-%s"
  }
}
`, filepath.Base(e.dir))
}

// runKeeld is a keeld with native, overlay, content, a resolver reaching
// reg over plain HTTP and the runc runtime; it has pulled busybox from reg
// onto native and overlay as ref (returned).
type runKeeld struct {
	*keeld
	ref string
	reg *registry.Registry
}

func startRunKeeld(t *testing.T, extra string) *runKeeld {
	t.Helper()
	return startRunKeeldOn(t, "", extra)
}

// startRunKeeldOn is startRunKeeld with keeld's root at root ("" for the
// env's own) and extra config.
func startRunKeeldOn(t *testing.T, root, extra string) *runKeeld {
	t.Helper()
	k := newRunKeeld(t, root, extra)
	k.ok("image", "pull", "-q", k.ref)
	k.ok("image", "pull", "-q", "--snapshotter", "overlay", k.ref)
	if strings.Contains(extra, `"btrfs"`) {
		k.ok("image", "pull", "-q", "--snapshotter", "btrfs", k.ref)
	}
	return k
}

// newRunKeeld is startRunKeeldOn before its pulls: busybox is in the
// registry as ref, not yet in keeld.
func newRunKeeld(t *testing.T, root, extra string) *runKeeld {
	t.Helper()
	return newRunKeeldEdit(t, root, extra, nil)
}

// newRunKeeldEdit is newRunKeeld with its config's text passed through
// edit, when set.
func newRunKeeldEdit(t *testing.T, root, extra string, edit func(string) string) *runKeeld {
	t.Helper()
	needRun(t)
	reg := startRegistry(t)
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushImage(t.Context(), "e2e/busybox", "v1", img); err != nil {
		t.Fatal(err)
	}
	block, err := resolverPlugin([]byte(plainHTTP(reg.Host)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	if root != "" {
		e.root = root
	}
	body := pullPlugins + block + runtimePlugin(e) + extra
	if edit != nil {
		body = edit(body)
	}
	k := e.startWith(t, e.config(t, body))
	rk := &runKeeld{keeld: k, ref: reg.Host + "/e2e/busybox:v1", reg: reg}
	t.Cleanup(func() { rk.cleanup() })
	return rk
}

// needRun skips (fails, strict) a test that runs containers where it
// cannot: not root, or no runc or busybox-static.
func needRun(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root to run containers")
	}
	for _, bin := range []string{"runc", registry.BusyboxPath} {
		if _, err := exec.LookPath(bin); err != nil {
			testkit.SkipOrFail(t, "%s: %v (apt-get install runc busybox-static)", bin, err)
		}
	}
}

// cleanup removes every container left, killing its task, so no shim or
// container outlives the test.
func (k *runKeeld) cleanup() {
	select {
	case <-k.done:
		return // keeld is gone; the test that killed it cleans up
	default:
	}
	r := k.keel("container", "ls", "-q")
	for _, id := range strings.Fields(r.stdout) {
		if r := k.keel("container", "rm", "--force", id); r.code != 0 {
			k.t.Errorf("cleanup: %v", r)
		}
	}
}

// TestRun: keel run --rm prints the container's output and exits with its
// code; the container is gone after.
func TestRun(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	r := k.keel("run", "--rm", "--env", "WHO=keel", k.ref, "hello", "sh", "-c", "echo hi $WHO; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "hi keel\n" || r.stderr != "err\n" {
		t.Fatalf("want exit 3, 'hi keel', 'err'; %v", r)
	}
	if out := k.ok("container", "ls", "-q"); out != "" {
		t.Errorf("containers left after --rm: %q", out)
	}
	// Its snapshot went with it: the id is free at once, before any gc.
	if r := k.keel("run", "--rm", k.ref, "hello", "sh", "-c", "exit 0"); r.code != 0 {
		t.Fatalf("run --rm of the same id again: %v", r)
	}
	r = k.keelIn(strings.NewReader("from stdin\n"), "run", "--rm", "-i", k.ref, "cat", "sh", "-c", "read l; echo got $l")
	if r.code != 0 || r.stdout != "got from stdin\n" {
		t.Fatalf("stdin: %v", r)
	}
	// The image's Cmd (/bin/sh) runs when no args are given; stdin EOF ends it.
	if r := k.keelIn(strings.NewReader("exit 7\n"), "run", "--rm", "-i", k.ref, "imgcmd"); r.code != 7 {
		t.Fatalf("image cmd: %v", r)
	}
}

// TestRunDetached: run -d, then task ls, exec, ps, pause/resume, kill, rm,
// and container rm refused while running, allowed with --force.
func TestRunDetached(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	log := filepath.Join(k.env.dir, "web.log")
	if out := k.ok("run", "-d", "--log", log, "--label", "app=web", k.ref, "web", "sh", "-c", "echo up; exec /bin/busybox sleep 1000"); strings.TrimSpace(out) != "web" {
		t.Fatalf("run -d printed %q", out)
	}
	var tasks []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Pid    uint32 `json:"pid"`
	}
	k.okJSON(&tasks, "task", "ls")
	if len(tasks) != 1 || tasks[0].ID != "web" || tasks[0].Status != "running" || tasks[0].Pid == 0 {
		t.Fatalf("task ls: %+v", tasks)
	}
	if r := k.keel("task", "exec", "web", "sh", "-c", "echo in $(hostname); exit 4"); r.code != 4 || r.stdout != "in web\n" {
		t.Fatalf("exec: %v", r)
	}
	if out := k.ok("task", "ps", "-q", "web"); len(strings.Fields(out)) != 1 {
		t.Errorf("ps: %q", out)
	}
	k.ok("task", "pause", "web")
	k.okJSON(&tasks, "task", "ls")
	if tasks[0].Status != "paused" {
		t.Errorf("after pause: %+v", tasks)
	}
	k.ok("task", "resume", "web")
	k.ok("task", "metrics", "web")
	r := k.keel("container", "rm", "web")
	if msg := oneLineError(t, r); !strings.Contains(msg, "running task") {
		t.Errorf("rm of a running container: %q", msg)
	}
	k.ok("task", "kill", "-s", "KILL", "web")
	waitFor(t, func() bool {
		k.okJSON(&tasks, "task", "ls")
		return tasks[0].Status == "stopped"
	})
	if out := k.ok("task", "rm", "web"); strings.TrimSpace(out) != "137" {
		t.Errorf("task rm printed %q, want 137", out)
	}
	if b, _ := os.ReadFile(log); string(b) != "up\n" {
		t.Errorf("log %q", b)
	}
	k.ok("run", "-d", k.ref, "web2", "/bin/busybox", "sleep", "1000")
	k.ok("container", "rm", "--force", "web", "web2")
	k.okJSON(&tasks, "task", "ls")
	if len(tasks) != 0 {
		t.Errorf("tasks after rm --force: %+v", tasks)
	}
	k.ok("run", "-d", k.ref, "web", "/bin/busybox", "sleep", "1000")
	k.ok("container", "rm", "--force", "web")
}

// TestRunSnapshotters: a container whose rootfs is on native, overlay and
// btrfs (a loopback btrfs).
func TestRunSnapshotters(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	for _, sn := range []string{"native", "overlay"} {
		r := k.keel("run", "--rm", "--snapshotter", sn, k.ref, "on-"+sn, "sh", "-c", "echo $0 > /f && cat /f", sn)
		if r.code != 0 || r.stdout != sn+"\n" {
			t.Errorf("%s: %v", sn, r)
		}
	}
}

// TestRunBtrfs: a container whose rootfs is a btrfs subvolume, keeld's
// root on a loopback btrfs.
func TestRunBtrfs(t *testing.T) {
	t.Parallel()
	dir := fixture.LoopbackBtrfs(t)
	k := startRunKeeldOn(t, dir, `
plugin "snapshotter" "btrfs" {
  path = "keel-snapshotter-btrfs"
}
`)
	r := k.keel("run", "--rm", "--snapshotter", "btrfs", k.ref, "on-btrfs", "sh", "-c", "echo btrfs > /f && cat /f")
	if r.code != 0 || r.stdout != "btrfs\n" {
		t.Errorf("btrfs: %v", r)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", settle)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var _ = client.ExitStatus{}
