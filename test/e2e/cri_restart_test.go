package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
)

// crictlFiles writes crictl's (empty) config and the pod and container
// configs named in files (name → JSON) into k's dir, and returns the
// configs' paths by name.
func (k *criKeeld) crictlFiles(t *testing.T, files map[string]string) map[string]string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(k.env.dir, "crictl.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for name, body := range files {
		paths[name] = filepath.Join(k.env.dir, name+".json")
		if err := os.WriteFile(paths[name], []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

// restartKeeld starts keeld again on a copy of k's config, once k's keeld
// is gone (the copy keeps the killed keeld's log apart), and waits until
// it runs keel-cri; the pods a failed test leaves are removed before this
// keeld stops.
func (k *criKeeld) restartKeeld(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(k.config)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(k.env.dir, fmt.Sprintf("keeld-%d.hcl", k.env.n.Add(1)))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	k.keeld = k.env.startWith(t, path)
	k.removePodsAtCleanup(t)
	k.waitCRI(0)
}

// criView is what crictl shows of every pod and container, as JSON, and
// each pod's network status: what must read the same across restarts.
type criView struct {
	pods, containers string
	podNetworks      map[string]string
}

func (k *criKeeld) view(t *testing.T) criView {
	t.Helper()
	v := criView{pods: k.crictl(t, "pods", "-o", "json"), containers: k.crictl(t, "ps", "-a", "-o", "json"), podNetworks: map[string]string{}}
	var pods struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	decode(t, v.pods, &pods)
	for _, p := range pods.Items {
		var inspect struct {
			Status struct {
				Network json.RawMessage `json:"network"`
			} `json:"status"`
		}
		decode(t, k.crictl(t, "inspectp", p.ID), &inspect)
		v.podNetworks[p.ID] = string(inspect.Status.Network)
	}
	return v
}

// TestCRIRestartSurvival: with two pods running (one on the CNI network,
// one on the host's) and their containers (one exited), keel-cri is
// SIGKILLed alone, then keeld (taking its keel-cri along); a keeld
// started again on the same config lists the same pods and containers in
// the same states with the same IPs through crictl, exec works, a
// container's log keeps its old lines and takes new ones, a new pod runs,
// and removing everything leaves no namespace, mount or veth.
func TestCRIRestartSurvival(t *testing.T) {
	t.Parallel()
	k := startCRIPodKeeld(t)
	crictl(t) // skip before anything else when it cannot be built
	ref := k.reg.Host + "/e2e/busybox:v1"
	logs := t.TempDir()
	pod := func(name string, hostNet bool) string {
		ns := ""
		if hostNet {
			ns = `"security_context": {"namespace_options": {"network": 2}}`
		}
		return fmt.Sprintf(`{"metadata": {"name": %q, "namespace": "default", "attempt": 1, "uid": "%s-uid"},
			"hostname": %q, "log_directory": %q, "linux": {%s}}`, name, name, name, filepath.Join(logs, name), ns)
	}
	// The containers run as root (the image's user cannot write /).
	ctr := func(name, script string) string {
		return fmt.Sprintf(`{"metadata": {"name": %q}, "image": {"image": %q}, "command": ["sh", "-c", %q],
			"log_path": %q, "linux": {"security_context": {"run_as_user": {"value": 0}}}}`, name, ref, script, name+".log")
	}
	// ticker writes "tick" once for each file /go it finds (and
	// removes): a new log line on demand, with no timing involved.
	ticker := `echo started; while :; do if [ -e /go ]; then rm /go; echo tick; fi; sleep 0.1; done`
	files := k.crictlFiles(t, map[string]string{
		"pod-net": pod("net", false), "pod-host": pod("host", true), "pod-new": pod("new", false),
		"ticker": ctr("ticker", ticker), "sleeper": ctr("sleeper", "exec sleep 600"), "quitter": ctr("quitter", "exit 3"),
	})
	k.crictl(t, "pull", ref)
	netPod := strings.TrimSpace(k.crictl(t, "runp", files["pod-net"]))
	hostPod := strings.TrimSpace(k.crictl(t, "runp", files["pod-host"]))
	run := func(pod, podFile, name string) string {
		id := strings.TrimSpace(k.crictl(t, "create", pod, files[name], files[podFile]))
		k.crictl(t, "start", id)
		return id
	}
	tickerID := run(netPod, "pod-net", "ticker")
	sleeperID := run(hostPod, "pod-host", "sleeper")
	quitterID := run(hostPod, "pod-host", "quitter")
	tickerLog := filepath.Join(logs, "net", "ticker.log")
	waitLog := func(what string, lines ...string) {
		eventually(t, settle, what, func() error {
			cmd, cancel := k.crictlCmd(t, "logs", tickerID)
			defer cancel()
			out, err := cmd.CombinedOutput()
			if err != nil || string(out) != strings.Join(lines, "\n")+"\n" {
				return fmt.Errorf("crictl logs: %v: %q, want %q", err, out, lines)
			}
			return nil
		})
	}
	waitLog("the ticker's first line", "started")
	eventually(t, settle, "quitter exited", func() error {
		var inspect struct {
			Status struct {
				State    string `json:"state"`
				ExitCode int    `json:"exitCode"`
			} `json:"status"`
		}
		decode(t, k.crictl(t, "inspect", quitterID), &inspect)
		if inspect.Status.State != "CONTAINER_EXITED" || inspect.Status.ExitCode != 3 {
			return fmt.Errorf("quitter: %+v", inspect.Status)
		}
		return nil
	})
	before := k.view(t)
	if !strings.Contains(before.podNetworks[netPod], `"ip"`) {
		t.Fatalf("the CNI pod has no IP: %s", before.podNetworks[netPod])
	}

	// keel-cri alone dies: keeld restarts it, it finds everything again.
	pid := k.waitCRI(0)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	k.waitCRI(1)
	if after := k.view(t); !slices.Equal([]string{after.pods, after.containers}, []string{before.pods, before.containers}) ||
		fmt.Sprint(after.podNetworks) != fmt.Sprint(before.podNetworks) {
		t.Errorf("after keel-cri's restart:\n%+v\nwant\n%+v", after, before)
	}

	// keeld dies, its keel-cri with it; a new keeld on the same config.
	pid = k.waitCRI(1)
	k.kill()
	eventually(t, settle, "keel-cri gone with keeld", func() error {
		if alive(pid) {
			return errors.New("keel-cri still runs")
		}
		return nil
	})
	k.restartKeeld(t)
	after := k.view(t)
	if after.pods != before.pods {
		t.Errorf("crictl pods after keeld's restart:\n%s\nwant\n%s", after.pods, before.pods)
	}
	if after.containers != before.containers {
		t.Errorf("crictl ps -a after keeld's restart:\n%s\nwant\n%s", after.containers, before.containers)
	}
	if fmt.Sprint(after.podNetworks) != fmt.Sprint(before.podNetworks) {
		t.Errorf("pod networks after keeld's restart: %v, want %v", after.podNetworks, before.podNetworks)
	}

	// exec in both pods; the ticker's log takes a new line after its old.
	if out := k.crictl(t, "exec", sleeperID, "sh", "-c", "hostname"); strings.TrimSpace(out) == "" {
		t.Errorf("crictl exec hostname in the host's network: %q", out)
	}
	k.crictl(t, "exec", tickerID, "sh", "-c", "touch /go")
	waitLog("the ticker's new line", "started", "tick")
	if b, err := os.ReadFile(tickerLog); err != nil || strings.Count(string(b), "\n") != 2 {
		t.Errorf("ticker's log file: %q, %v", b, err)
	}

	// A new pod and container run next to the old ones.
	newPod := strings.TrimSpace(k.crictl(t, "runp", files["pod-new"]))
	newID := run(newPod, "pod-new", "sleeper")
	if out := k.crictl(t, "exec", newID, "sh", "-c", "hostname"); strings.TrimSpace(out) != "new" {
		t.Errorf("crictl exec hostname in the new pod: %q", out)
	}
	if out := k.crictl(t, "ps", "-q"); len(strings.Fields(out)) != 3 {
		t.Errorf("running containers after the new pod's: %q, want 3", out)
	}

	// Everything stops and goes, and takes its namespaces, mounts and
	// veths along.
	for _, p := range []string{netPod, hostPod, newPod} {
		k.crictl(t, "stopp", p)
		k.crictl(t, "rmp", p)
	}
	if out := k.crictl(t, "pods", "-q") + k.crictl(t, "ps", "-a", "-q"); out != "" {
		t.Errorf("left after removing every pod: %q", out)
	}
	if left := (&runKeeld{keeld: k.keeld}).netLeftovers(t); len(left) > 0 {
		t.Errorf("network leftovers: %v", left)
	}
	for _, dir := range []string{k.env.root, k.env.state} {
		if ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); err != nil || len(ms) > 0 {
			for _, m := range ms {
				t.Errorf("mount left: %s", m.Mountpoint)
			}
		}
	}
}
