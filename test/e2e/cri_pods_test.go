package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
)

// startCRIPodKeeld is startCRIKeeld with the runc runtime, so pods run.
func startCRIPodKeeld(t *testing.T) *criKeeld {
	t.Helper()
	k := startCRIKeeld(t, runtimePlugin)
	k.removePodsAtCleanup(t)
	return k
}

// removePodsAtCleanup removes the pods a failed test left before k's
// keeld stops (cleanups run last-in first-out: call it again after each
// start of a keeld), so no pause process, netns or veth stays.
func (k *criKeeld) removePodsAtCleanup(t *testing.T) {
	started := k.keeld
	t.Cleanup(func() {
		if k.keeld != started {
			return // a later keeld's cleanup removed them
		}
		rs, _ := k.criClients(t)
		ctx := context.Background()
		resp, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			t.Errorf("cleanup: list pods: %v", err)
			return
		}
		for _, p := range resp.Items {
			if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				t.Errorf("cleanup: remove pod %s: %v", p.Id, err)
			}
		}
	})
}

// podConfig is a pod's config as a kubelet sends it.
func podConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: "uid-" + name, Attempt: 1},
		Hostname:    name,
		Labels:      map[string]string{"app": name, "tier": "e2e"},
		Annotations: map[string]string{"note": "pod " + name},
		Linux:       &runtimeapi.LinuxPodSandboxConfig{},
	}
}

// podInfo is what PodSandboxStatus's verbose info says of the pause
// process.
type podInfo struct {
	Pid int `json:"pid"`
}

func podStatus(t *testing.T, rs runtimeapi.RuntimeServiceClient, id string) (*runtimeapi.PodSandboxStatus, podInfo) {
	t.Helper()
	resp, err := rs.PodSandboxStatus(t.Context(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("status of pod %s: %v", id, err)
	}
	var info podInfo
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatalf("pod %s: verbose info %q: %v", id, resp.Info, err)
	}
	return resp.Status, info
}

// nsPid is pid's number in its innermost PID namespace.
func nsPid(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(rest)
			return f[len(f)-1]
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return ""
}

// procStat is the start of /proc/pid/stat: pid, (name) and state.
func procStat(pid string) string {
	b, _ := os.ReadFile("/proc/" + pid + "/stat")
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) {
		return string(b[:i+3])
	}
	return ""
}

// signalState is what the kernel says of pid's signals and of each of its
// threads (state, where it sleeps, cpu time), for a failure to reap.
func signalState(pid int) string {
	var b strings.Builder
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(st), "\n") {
		if k, _, _ := strings.Cut(l, ":"); slices.Contains([]string{"State", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "Seccomp"}, k) {
			b.WriteString(strings.Join(strings.Fields(l), " ") + "; ")
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		wchan, _ := os.ReadFile(task + "/wchan")
		sched, _ := os.ReadFile(task + "/schedstat")
		fmt.Fprintf(&b, "[%s wchan=%s schedstat=%s] ", procStat(filepath.Base(task)), wchan, strings.TrimSpace(string(sched)))
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return b.String() + strings.ReplaceAll(strings.TrimSpace(string(cg)), "\n", " ")
}

// children are pid's child processes (of every thread).
func children(pid int) []string {
	var out []string
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

// TestCRIPods runs pod sandboxes through the CRI as a kubelet does: keel's
// own pause image, a pod on keeld's default network with a port mapping
// and DNS, the pause process as PID 1 that reaps, a pod on the host's
// network, list filters, keel-cri killed (the pods come back from keeld),
// stop (the address released) and remove.
func TestCRIPods(t *testing.T) {
	t.Parallel()
	k := startCRIPodKeeld(t)
	rs, is := k.criClients(t)
	ctx := t.Context()
	kc := k.client(t, "k8s.io")
	subnet := netip.MustParsePrefix(testNetFor(t, k.env.root).subnet)

	// keel-cri made its pause image at its start: pinned, one layer.
	imgs, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pauseName string
	for _, i := range imgs.Images {
		if i.Pinned && len(i.RepoTags) == 1 && strings.HasPrefix(i.RepoTags[0], "localhost/keel/pause:") {
			pauseName = i.RepoTags[0]
		}
	}
	if pauseName == "" {
		t.Fatalf("no pinned localhost/keel/pause image: %v", imgs.Images)
	}
	pauseBefore, err := kc.GetImage(ctx, pauseName)
	if err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	cfg := podConfig("web")
	cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(port), HostIp: "127.0.0.1"}}
	cfg.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"e2e.svc.cluster.local"}, Options: []string{"ndots:5"}}
	run, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	web := run.PodSandboxId
	st, info := podStatus(t, rs, web)
	ip, err := netip.ParseAddr(st.GetNetwork().GetIp())
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || err != nil || !subnet.Contains(ip) {
		t.Fatalf("pod status %v: want READY with an IP in %s", st, subnet)
	}
	if st.Metadata.Name != "web" || st.Metadata.Uid != "uid-web" || st.Metadata.Attempt != 1 || st.Labels["app"] != "web" ||
		st.Annotations["note"] != "pod web" || st.CreatedAt == 0 ||
		st.Linux.Namespaces.Options.Network != runtimeapi.NamespaceMode_POD || st.Linux.Namespaces.Options.Pid != runtimeapi.NamespaceMode_POD {
		t.Errorf("pod status %v", st)
	}
	if _, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg}); err == nil {
		t.Error("a second pod of the same name and attempt was made")
	}

	// The pause process is PID 1 of the pod's PID namespace, with the
	// pod's hostname and resolv.conf.
	if got := nsPid(t, info.Pid); got != "1" {
		t.Errorf("pause is pid %s in its namespace, want 1", got)
	}
	if out, err := exec.Command("nsenter", "-t", strconv.Itoa(info.Pid), "-u", "hostname").Output(); err != nil || strings.TrimSpace(string(out)) != "web" {
		t.Errorf("pod hostname %q, %v", out, err)
	}
	resolv, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/resolv.conf", info.Pid))
	if err != nil || !strings.Contains(string(resolv), "nameserver 10.96.0.10") || !strings.Contains(string(resolv), "search e2e.svc.cluster.local") ||
		!strings.Contains(string(resolv), "options ndots:5") {
		t.Errorf("pod resolv.conf %q, %v", resolv, err)
	}

	// It reaps: a process orphaned in the pod becomes its child, and is
	// gone, not a zombie, once it exits (it waits on a FIFO the test
	// opens, so nothing hangs on timing).
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command("nsenter", "-t", strconv.Itoa(info.Pid), "-p", "/bin/sh", "-c", "(cat "+fifo+" >/dev/null 2>&1 </dev/null &) ; exit 0")
	if out, err := orphan.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	eventually(t, settle, "the orphan reparented to pause", func() error {
		// cat itself, not the subshell that forked it, still exiting.
		if c := children(info.Pid); len(c) != 1 || procStat(c[0]) == "" || !strings.Contains(procStat(c[0]), "(cat) S") {
			return fmt.Errorf("pause's children: %v", c)
		}
		return nil
	})
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	eventually(t, settle, "the orphan reaped", func() error {
		if c := children(info.Pid); len(c) != 0 {
			return fmt.Errorf("pause's children: %v (%s); pause: %s", c, procStat(c[0]), signalState(info.Pid))
		}
		return nil
	})

	// The port mapping reaches a server in the pod's network namespace.
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello from the pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	httpd := exec.Command("nsenter", "-t", strconv.Itoa(info.Pid), "-n", "/bin/busybox", "httpd", "-f", "-p", "80", "-h", www)
	if err := httpd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { httpd.Process.Kill(); httpd.Wait() })
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), "hello from the pod\n")
	httpd.Process.Kill()
	httpd.Wait()

	// A pod on the host's network: the host's namespace, no pod IP.
	hcfg := podConfig("host")
	hcfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}
	run, err = rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: hcfg})
	if err != nil {
		t.Fatal(err)
	}
	host := run.PodSandboxId
	hst, hinfo := podStatus(t, rs, host)
	if hst.State != runtimeapi.PodSandboxState_SANDBOX_READY || hst.Network.GetIp() != "" || hst.Linux.Namespaces.Options.Network != runtimeapi.NamespaceMode_NODE {
		t.Errorf("host pod status %v", hst)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", hinfo.Pid)); got != self {
		t.Errorf("host pod's network namespace %s, the host's %s", got, self)
	}

	list := func(t *testing.T, f *runtimeapi.PodSandboxFilter) []string {
		t.Helper()
		resp, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, p := range resp.Items {
			ids = append(ids, p.Id)
		}
		return ids
	}
	wantIDs := func(t *testing.T, what string, got []string, want ...string) {
		t.Helper()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: pods %v, want %v", what, got, want)
		}
	}
	// Stop the host pod first, for the state filter.
	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: host}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		filter *runtimeapi.PodSandboxFilter
		want   []string
	}{
		{"none", nil, []string{web, host}},
		{"id", &runtimeapi.PodSandboxFilter{Id: web}, []string{web}},
		{"id prefix", &runtimeapi.PodSandboxFilter{Id: host[:12]}, []string{host}},
		{"ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, []string{web}},
		{"not ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, []string{host}},
		{"label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "host"}}, []string{host}},
		{"labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "e2e", "app": "web"}}, []string{web}},
		{"label no match", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "db"}}, nil},
	} {
		wantIDs(t, "filter "+c.name, list(t, c.filter), c.want...)
	}

	// keel-cri killed: keeld restarts it, and it finds the pods, their
	// state and address in keeld; the pause image is not written again.
	pid := k.waitCRI(0)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	k.waitCRI(1)
	wantIDs(t, "after keel-cri's restart", list(t, nil), web, host)
	if st2, _ := podStatus(t, rs, web); st2.State != runtimeapi.PodSandboxState_SANDBOX_READY || st2.Network.GetIp() != ip.String() {
		t.Errorf("pod after keel-cri's restart: %v, want READY at %s", st2, ip)
	}
	if after, err := kc.GetImage(ctx, pauseName); err != nil || after.Target.Digest != pauseBefore.Target.Digest || !after.UpdatedAt.Equal(pauseBefore.UpdatedAt) {
		t.Errorf("pause image after keel-cri's restart %+v, %v; before %+v", after, err, pauseBefore)
	}

	// Stop: NOTREADY, its address released; again is no error.
	for range 2 {
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: web}); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := podStatus(t, rs, web); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY || st.Network.GetIp() != "" {
		t.Errorf("stopped pod %v", st)
	}
	all, err := kc.Networks().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(all, func(n client.Network) bool { return n.Default })
	if i < 0 {
		t.Fatalf("no default network in %+v", all)
	}
	var nets []inspectedNetwork
	k.okJSON(&nets, "network", "inspect", all[i].Name)
	for _, e := range nets[0].Endpoints {
		if e.ContainerID == web {
			t.Errorf("stopped pod still attached: %+v", e)
		}
	}
	if alive(info.Pid) {
		t.Errorf("pause %d runs after stop", info.Pid)
	}

	// Remove: gone from keeld; again is no error; an unknown pod is
	// NotFound to status and stop.
	for _, id := range []string{web, host, web} {
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if out := k.ok("-n", "k8s.io", "container", "ls", "-q"); out != "" {
		t.Errorf("keel containers left after remove: %q", out)
	}
	wantIDs(t, "after remove", list(t, nil))
	if _, err := rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: web}); err == nil {
		t.Error("status of a removed pod answers")
	}
}

// pauseID is the id of the pause image keel-cri made.
func pauseID(t *testing.T, k *criKeeld) string {
	t.Helper()
	_, is := k.criClients(t)
	resp, err := is.ListImages(t.Context(), &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range resp.Images {
		if i.Pinned {
			return i.Id
		}
	}
	t.Fatalf("no pinned pause image in %v", resp.Images)
	return ""
}

// TestCrictlPods: crictl runp, pods, inspectp, stopp and rmp on a pod
// config file, as an operator runs them.
func TestCrictlPods(t *testing.T) {
	t.Parallel()
	k := startCRIPodKeeld(t)
	crictl(t)
	dir := k.env.dir
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pod := filepath.Join(dir, "pod.json")
	if err := os.WriteFile(pod, []byte(`{
  "metadata": {"name": "nginx-sandbox", "namespace": "default", "attempt": 1, "uid": "hdishd83djaidwnduwk28bcsb"},
  "hostname": "nginx",
  "labels": {"app": "nginx"},
  "log_directory": "/tmp",
  "linux": {}
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(k.crictl(t, "runp", pod))
	if len(id) != 64 {
		t.Fatalf("crictl runp printed %q, want a pod id", id)
	}
	if out := k.crictl(t, "pods"); !strings.Contains(out, id[:13]) || !strings.Contains(out, "nginx-sandbox") || !strings.Contains(out, "Ready") {
		t.Errorf("crictl pods:\n%s", out)
	}
	if out := k.crictl(t, "pods", "-q", "--label", "app=nginx"); strings.TrimSpace(out) != id {
		t.Errorf("crictl pods -q --label app=nginx: %q", out)
	}
	var inspect struct {
		Status struct {
			ID      string `json:"id"`
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	decode(t, k.crictl(t, "inspectp", id), &inspect)
	if inspect.Status.ID != id || inspect.Status.State != "SANDBOX_READY" || inspect.Status.Network.IP == "" {
		t.Errorf("crictl inspectp: %+v", inspect.Status)
	}
	if out := k.crictl(t, "stopp", id); !strings.Contains(out, "Stopped sandbox "+id) {
		t.Errorf("crictl stopp:\n%s", out)
	}
	decode(t, k.crictl(t, "inspectp", id), &inspect)
	if inspect.Status.State != "SANDBOX_NOTREADY" || inspect.Status.Network.IP != "" {
		t.Errorf("crictl inspectp after stopp: %+v", inspect.Status)
	}
	if out := k.crictl(t, "rmp", id); !strings.Contains(out, "Removed sandbox "+id) {
		t.Errorf("crictl rmp:\n%s", out)
	}
	if out := k.crictl(t, "pods", "-q"); out != "" {
		t.Errorf("crictl pods -q after rmp: %q", out)
	}
}
