package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

	digest "github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// check runs `keel check` (args after it) against k and decodes its JSON.
func (k *keeld) check(args ...string) (client.CheckReport, result) {
	k.t.Helper()
	r := runKeelWithin(k.t, k.env.socket, nil, 2*time.Minute, append([]string{"check", "--format", "json"}, args...)...)
	var rep client.CheckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		k.t.Fatalf("%v\n%v", err, r)
	}
	return rep, r
}

// checkClean fails the test unless `keel check` finds nothing.
func (k *keeld) checkClean() {
	k.t.Helper()
	if rep, r := k.check(); r.code != 0 || len(rep.Problems) != 0 {
		k.t.Fatalf("keel check not clean: %+v\n%v", rep, r)
	}
}

// keeldCheck runs `keeld check --config path --format json` (offline)
// with args, and decodes its report.
func keeldCheck(t *testing.T, path string, args ...string) (client.CheckReport, result) {
	t.Helper()
	r := runKeeldCheck(t, path, append([]string{"--format", "json"}, args...)...)
	var rep client.CheckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%v", err, r)
	}
	return rep, r
}

// runKeeldCheck runs `keeld check --config path` with args.
func runKeeldCheck(t *testing.T, path string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"check", "--config", path}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "keeld"), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, _ := cmd.Output()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() < 0 {
		t.Fatalf("keeld check did not run to its end: %v (stderr: %s)", cmd.ProcessState, stderr.String())
	}
	return result{args: full, stdout: string(stdout), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// layerMounts lists the mounts under state/pull (keeld's layer mounts).
func layerMounts(t *testing.T, state string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], filepath.Join(state, "pull")+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestCheckAfterKillMidPull: keeld SIGKILLed while a layer is mounted to
// be applied leaves the mount; `keeld check` (offline) finds it, --repair
// removes it, and the restarted keeld is clean by `keel check`. A second
// kill mid-pull leaves another mount, which the next start sweeps.
func TestCheckAfterKillMidPull(t *testing.T) {
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root to mount snapshots")
	}
	reg := startRegistry(t)
	big, bigDiff := layerOf(t, tarEntry{name: "big", typ: tar.TypeReg, data: randomBytes(t, 24<<20)})
	pushLayers(t, reg, "e2e/killpull", []registry.Blob{big}, []digest.Digest{bigDiff})
	proxy, proxyHost := newStallProxy(t, reg.URL(), 10<<20)
	block, err := resolverPlugin(json.RawMessage(`{"stall_timeout": "5m", "host": {"` + proxyHost + `": {"plain_http": true}}}`))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	path := e.config(t, pullPlugins+block)
	ref := proxyHost + "/e2e/killpull:v1"

	// killMidPull starts keeld, pulls until the layer is mounted and its
	// download stalls, and SIGKILLs keeld; it returns the mounts left.
	killMidPull := func(t *testing.T) []string {
		k := e.startWith(t, path)
		c := k.client(t, "default")
		go c.Pull(context.WithoutCancel(t.Context()), ref, client.WithPullUnpack)
		select {
		case <-proxy.stalled:
		case <-time.After(time.Minute):
			t.Fatal("the registry proxy never stalled")
		}
		eventually(t, 30*time.Second, "a layer mounted", func() error {
			if len(layerMounts(t, e.state)) == 0 {
				return errors.New("no mount under state/pull")
			}
			return nil
		})
		k.kill()
		left := layerMounts(t, e.state)
		if len(left) == 0 {
			t.Fatal("no mount left by the killed keeld")
		}
		return left
	}
	t.Cleanup(func() {
		for _, m := range layerMounts(t, e.state) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
	})

	left := killMidPull(t)
	rep, r := keeldCheck(t, path)
	if r.code != 1 {
		t.Fatalf("keeld check after the kill: exit %d, want 1\n%v", r.code, r)
	}
	for _, m := range left {
		if !slices.ContainsFunc(rep.Problems, func(p client.CheckProblem) bool {
			return p.Kind == "leftover" && p.Object == m && strings.Contains(p.Problem, "mount") && p.Safe
		}) {
			t.Errorf("keeld check did not report the mount %s: %+v", m, rep.Problems)
		}
	}
	rep, r = keeldCheck(t, path, "--repair")
	if r.code != 0 {
		t.Fatalf("keeld check --repair: exit %d, want 0\n%v", r.code, r)
	}
	if m := layerMounts(t, e.state); len(m) != 0 {
		t.Fatalf("mounts after keeld check --repair: %v", m)
	}
	if _, r = keeldCheck(t, path); r.code != 0 {
		t.Fatalf("keeld check after the repair: exit %d\n%v", r.code, r)
	}
	k := e.startWith(t, path)
	k.checkClean()

	// Killed again: the next start sweeps the mount before serving.
	k.kill()
	killMidPull(t)
	k = e.startWith(t, path)
	if m := layerMounts(t, e.state); len(m) != 0 {
		t.Fatalf("mounts after a restart: %v", m)
	}
	k.checkClean()
	proxy.Release()
	if _, err := k.client(t, "default").Pull(t.Context(), ref, client.WithPullUnpack); err != nil {
		t.Fatalf("pull after the restart: %v", err)
	}
	k.checkClean()
}

// TestPluginSocketsUnderState: keeld's plugins make their sockets under
// keeld's state dir, never in the temp dir; a SIGKILLed keeld leaves them
// there, and the next start removes them.
func TestPluginSocketsUnderState(t *testing.T) {
	// Where go-plugin would put them by default; short, for the sockets.
	tmp, err := os.MkdirTemp("", "kt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	t.Setenv("TMPDIR", tmp)
	listTmp := func() []string {
		var out []string
		for _, pat := range []string{"/tmp/plugin*", filepath.Join(tmp, "*")} {
			m, _ := filepath.Glob(pat)
			out = append(out, m...)
		}
		return out
	}
	e := newEnv(t) // under tmp: listed before keeld starts
	before := listTmp()
	k := e.start(t)
	for id, p := range k.plugins() {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.Pid))
		if err != nil {
			t.Fatal(err)
		}
		want := "PLUGIN_UNIX_SOCKET_DIR=" + filepath.Join(e.state, "sockets", strconv.Itoa(k.cmd.Process.Pid)) + "/plugin-dir"
		if !bytes.Contains(env, []byte(want)) {
			t.Errorf("%s: its environment has no %s...", id, want)
		}
	}
	// The offline check is refused while keeld runs...
	path := k.cmd.Args[len(k.cmd.Args)-1]
	if r := runKeeldCheck(t, path); r.code != 2 || !strings.Contains(r.stderr, "use keel check") {
		t.Errorf("keeld check while keeld runs: %v", r)
	}
	stale := filepath.Join(e.state, "sockets", strconv.Itoa(k.cmd.Process.Pid))
	k.kill()
	// ... and keel check without keeld names it.
	if r := k.keel("check"); r.code != 2 || !strings.Contains(r.stderr, "keeld check --config") {
		t.Errorf("keel check without keeld: %v", r)
	}
	// Other tests on this machine may add to /tmp meanwhile: only new
	// entries that hold a socket of this keeld's plugins would be ours, and
	// the temp dir of this test is ours alone.
	for _, p := range listTmp() {
		if !slices.Contains(before, p) && strings.HasPrefix(p, tmp) {
			t.Errorf("new in TMPDIR after keeld was killed: %s", p)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(stale, "plugin-dir*")); len(m) == 0 {
		t.Errorf("the killed keeld left no socket dir under %s (were they elsewhere?)", stale)
	}
	k = e.start(t)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the killed keeld's socket dir after a restart: %v", err)
	}
	k.checkClean()
	if err := k.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(e.state, "sockets", "*")); len(m) != 0 {
		t.Errorf("left under %s/sockets by a keeld that stopped: %v", e.state, m)
	}
}

// TestCheckShimKilled: a task whose shim was SIGKILLed is reported by keel
// check; --repair deletes it and the check is clean again.
func TestCheckShimKilled(t *testing.T) {
	k := startRunKeeld(t, "")
	k.ok("run", "-d", k.ref, "victim", "/bin/busybox", "sleep", "1000")
	k.checkClean()
	shim := ppid(t, int(k.tasks()["victim"].Pid))
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var rep client.CheckReport
	eventually(t, settle, "keel check reports the dead shim", func() error {
		var r result
		rep, r = k.check()
		// Until the runtime sees the shim's process gone, the task is
		// reported unknown (not answering).
		if r.code != 1 || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Problem, "shim died") {
			return fmt.Errorf("%+v (exit %d)", rep, r.code)
		}
		return nil
	})
	if p := rep.Problems[0]; p.Kind != "task" || !strings.HasSuffix(p.Object, "/default--victim") || !p.Safe {
		t.Errorf("problem: %+v", p)
	}
	if rep, r := k.check("--repair"); r.code != 0 || len(rep.Problems) != 1 || !rep.Problems[0].Repaired {
		t.Fatalf("keel check --repair: %+v\n%v", rep, r)
	}
	k.checkClean()
	if _, ok := k.tasks()["victim"]; ok {
		t.Error("the dead task is still listed after the repair")
	}
}

// TestRunShimKilled: a foreground `keel run` whose shim is killed exits
// 255 and says why on stderr, rather than silently; the task's network
// is released all the same.
func TestRunShimKilled(t *testing.T) {
	k := startRunKeeld(t, "")
	run := startKeel(t, k.env.socket, "run", "--rm", "--net", "bridge", k.ref, "fg", "/bin/busybox", "sleep", "1000")
	var pid uint32
	eventually(t, settle, "the task runs", func() error {
		// Running, not just created: a kill inside Start is another case.
		r := k.tasks()["fg"]
		if pid = r.Pid; pid == 0 || r.Status != "running" {
			return fmt.Errorf("task not running yet: %+v", r)
		}
		return nil
	})
	if err := syscall.Kill(ppid(t, int(pid)), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-run.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("keel run still waits after its shim was killed")
	}
	if code := run.cmd.ProcessState.ExitCode(); code != 255 || !strings.Contains(run.stderr.String(), "shim") {
		t.Fatalf("keel run: exit %d, stderr %q; want 255 and why", code, run.stderr.String())
	}
	// Its delete released the network though the shim was gone.
	if left := k.netLeftovers(t); len(left) > 0 {
		t.Errorf("network left after the shim's death and the task's delete: %v", left)
	}
}
