package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/client/oci"
)

// httpdScript serves "hello from NAME" on port 80 with busybox httpd.
func httpdScript(name string) string {
	return fmt.Sprintf("mkdir -p /www && echo hello from %s > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www", name)
}

// freePort is a TCP port of 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type inspectedNetwork struct {
	Name      string `json:"name"`
	Bridge    string `json:"bridge"`
	Subnet    string `json:"subnet"`
	Endpoints []struct {
		Namespace   string   `json:"namespace"`
		ContainerID string   `json:"container_id"`
		IfName      string   `json:"ifname"`
		IPs         []string `json:"ips"`
	} `json:"endpoints"`
}

func (k *runKeeld) inspectNetwork(t *testing.T, name string) inspectedNetwork {
	t.Helper()
	var out []inspectedNetwork
	k.okJSON(&out, "network", "inspect", name)
	if len(out) != 1 {
		t.Fatalf("inspect %s: %+v", name, out)
	}
	return out[0]
}

// ipOf is container id's address on network name.
func (k *runKeeld) ipOf(t *testing.T, name, id string) string {
	t.Helper()
	for _, e := range k.inspectNetwork(t, name).Endpoints {
		if e.ContainerID == id && len(e.IPs) > 0 {
			ip, _, _ := strings.Cut(e.IPs[0], "/")
			return ip
		}
	}
	t.Fatalf("%s has no address on %s", id, name)
	return ""
}

// httpBody gets url from the host.
func httpBody(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitHTTP waits until url answers want from the host.
func waitHTTP(t *testing.T, url, want string) {
	t.Helper()
	eventually(t, 30*time.Second, url, func() error {
		body, err := httpBody(url)
		if err != nil {
			return err
		}
		if body != want {
			return fmt.Errorf("body %q", body)
		}
		return nil
	})
}

// netLeftovers is what keeld keeps for attachments (host-local's IPs,
// pinned namespaces, records) under its state dir, and the veths on the
// test network's bridge.
func (k *runKeeld) netLeftovers(t *testing.T) []string {
	t.Helper()
	var left []string
	state := k.env.state
	filepath.WalkDir(filepath.Join(state, "network"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if n := d.Name(); n == "lock" || strings.HasPrefix(n, "last_reserved_ip") {
			return nil
		}
		left = append(left, strings.TrimPrefix(p, state))
		return nil
	})
	pins, _ := os.ReadDir(filepath.Join(state, "netns"))
	for _, p := range pins {
		left = append(left, "netns/"+p.Name())
	}
	bridge := testNetFor(t, k.env.root).bridge
	if out, err := exec.Command("ip", "-o", "link", "show", "master", bridge).CombinedOutput(); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" {
				left = append(left, "veth: "+l)
			}
		}
	}
	return left
}

// iptablesRules are iptables-save's chains and rules, without counters.
func iptablesRules(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "-A") || strings.HasPrefix(l, ":") {
			if i := strings.Index(l, " ["); strings.HasPrefix(l, ":") && i > 0 {
				l = l[:i]
			}
			rules = append(rules, l)
		}
	}
	slices.Sort(rules)
	return rules
}

// keelRules are the rules in rules that name one of this test's
// containers or subnets.
func keelRules(rules []string, marks ...string) []string {
	var out []string
	for _, r := range rules {
		for _, m := range marks {
			if strings.Contains(r, m) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

func needCNI(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/portmap"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%v (apt-get install containernetworking-plugins)", err)
		}
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Fatalf("%v (apt-get install iptables)", err)
	}
}

// TestNetworkBridge: containers on the default network reach each other
// by IP, a published port answers on the host's 127.0.0.1, a container on
// another's network shares it, none and host behave as before, and keel
// ps shows them.
func TestNetworkBridge(t *testing.T) {
	t.Parallel()
	needCNI(t)
	k := startRunKeeld(t, "")
	port := freePort(t)
	k.ok("run", "-d", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), k.ref, "web", "sh", "-c", httpdScript("web"))
	ip := k.ipOf(t, "bridge", "web")
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), "hello from web\n")

	// Another container reaches it by IP.
	if out := k.ok("run", "--rm", k.ref, "client", "/bin/busybox", "wget", "-q", "-O-", "http://"+ip+"/"); out != "hello from web\n" {
		t.Errorf("wget from another container: %q", out)
	}
	// One on web's network finds it on its own 127.0.0.1.
	if out := k.ok("run", "--rm", "--net", "container:web", k.ref, "side", "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1/"); out != "hello from web\n" {
		t.Errorf("wget on web's network: %q", out)
	}
	// none: loopback only; host: the host's interfaces.
	if out := k.ok("run", "--rm", "--net", "none", k.ref, "alone", "/bin/busybox", "cat", "/proc/net/dev"); strings.Contains(out, "eth0") || !strings.Contains(out, "lo:") {
		t.Errorf("--net none interfaces: %q", out)
	}
	if out := k.ok("run", "--rm", k.ref, "bridged", "/bin/busybox", "cat", "/proc/net/dev"); !strings.Contains(out, "eth0") {
		t.Errorf("bridge interfaces: %q", out)
	}
	hostDev, _ := os.ReadFile("/proc/net/dev")
	if out := k.ok("run", "--rm", "--net", "host", k.ref, "onhost", "/bin/busybox", "cat", "/proc/net/dev"); !strings.Contains(out, testNetFor(t, k.env.root).bridge) || len(strings.Split(out, "\n")) < len(strings.Split(string(hostDev), "\n"))-2 {
		t.Errorf("--net host interfaces: %q", out)
	}

	// keel ps: web runs with its port; an exited one shows with -a.
	k.ok("run", "-d", k.ref, "quitter", "sh", "-c", "exit 3")
	eventually(t, 30*time.Second, "quitter exited", func() error {
		if st := k.tasks()["quitter"]; st.Status != "stopped" {
			return fmt.Errorf("quitter %+v", st)
		}
		return nil
	})
	ps := k.ok("ps")
	wantPort := fmt.Sprintf("127.0.0.1:%d->80/tcp", port)
	if lines := strings.Split(strings.TrimSpace(ps), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "CONTAINER ID") ||
		!strings.HasPrefix(lines[1], "web ") || !strings.Contains(lines[1], "Up ") || !strings.Contains(lines[1], wantPort) {
		t.Errorf("keel ps:\n%s", ps)
	}
	psa := k.ok("ps", "-a")
	if !strings.Contains(psa, "quitter") || !strings.Contains(psa, "Exited (3) ") || !strings.Contains(psa, " ago") {
		t.Errorf("keel ps -a:\n%s", psa)
	}
	if ids := strings.Fields(k.ok("ps", "-a", "-q")); !slices.Equal(ids, []string{"quitter", "web"}) {
		t.Errorf("keel ps -a -q: %v", ids)
	}
	var rows []struct {
		ID         string   `json:"id"`
		Status     string   `json:"status"`
		State      string   `json:"state"`
		ExitStatus *uint32  `json:"exit_status"`
		Ports      []string `json:"ports"`
	}
	k.okJSON(&rows, "ps", "-a", "--format", "json")
	if len(rows) != 2 || rows[0].ID != "quitter" || rows[0].ExitStatus == nil || *rows[0].ExitStatus != 3 || rows[0].State != "stopped" ||
		rows[1].ID != "web" || rows[1].State != "running" || !slices.Equal(rows[1].Ports, []string{wantPort}) {
		t.Errorf("keel ps -a --format json: %+v", rows)
	}
	k.ok("container", "rm", "quitter")
	k.ok("container", "rm", "--force", "web")
	if _, err := httpBody(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Errorf("port %d still answers after web's removal", port)
	}
	if left := k.netLeftovers(t); len(left) > 0 {
		t.Errorf("left after the containers' removal: %v", left)
	}
}

// TestNetworkEtcFiles: every container gets its own resolv.conf, hosts and
// hostname, per network mode, and --dns, --add-host and --hostname.
func TestNetworkEtcFiles(t *testing.T) {
	t.Parallel()
	needCNI(t)
	k := startRunKeeld(t, "")
	show := []string{"sh", "-c", "/bin/busybox cat /etc/resolv.conf; echo ---; /bin/busybox cat /etc/hosts; echo ---; /bin/busybox hostname; /bin/busybox cat /etc/hostname"}
	run := func(args ...string) []string {
		t.Helper()
		id := args[len(args)-1]
		out := k.ok(append(append([]string{"run", "--rm"}, args[:len(args)-1]...), append([]string{k.ref, id}, show...)...)...)
		parts := strings.Split(out, "---\n")
		if len(parts) != 3 {
			t.Fatalf("%s: output %q", id, out)
		}
		return parts
	}
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	for _, tc := range []struct {
		name, id string
		args     []string
		ip       bool
	}{
		{name: "bridge", id: "br", ip: true},
		{name: "none", id: "nonet", args: []string{"--net", "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := run(append(tc.args, tc.id)...)
			if strings.Contains(p[0], "nameserver 127.") || !strings.Contains(p[0], "nameserver ") {
				t.Errorf("resolv.conf %q (host's %q): loopback servers must go, one must stay", p[0], hostResolv)
			}
			if !strings.HasPrefix(p[1], "127.0.0.1\tlocalhost\n") {
				t.Errorf("hosts %q", p[1])
			}
			if got := strings.Contains(p[1], "\t"+tc.id+"\n"); got != tc.ip {
				t.Errorf("hosts %q: a line for %s: %v, want %v", p[1], tc.id, got, tc.ip)
			}
			if p[2] != tc.id+"\n"+tc.id+"\n" {
				t.Errorf("hostname, /etc/hostname: %q, want the container id", p[2])
			}
		})
	}
	t.Run("flags", func(t *testing.T) {
		p := run("--dns", "192.0.2.53", "--dns-search", "example.test", "--add-host", "db:192.0.2.7", "--hostname", "myhost", "flags")
		if p[0] != "nameserver 192.0.2.53\nsearch example.test\n" && !strings.HasPrefix(p[0], "nameserver 192.0.2.53\nsearch example.test\n") {
			t.Errorf("resolv.conf with --dns: %q", p[0])
		}
		if !strings.Contains(p[1], "\tmyhost\n") || !strings.HasSuffix(p[1], "192.0.2.7\tdb\n") {
			t.Errorf("hosts with --add-host, --hostname: %q", p[1])
		}
		if p[2] != "myhost\nmyhost\n" {
			t.Errorf("hostname with --hostname: %q", p[2])
		}
	})
	t.Run("host", func(t *testing.T) {
		hostHosts, _ := os.ReadFile("/etc/hosts")
		p := run("--net", "host", "--add-host", "db:192.0.2.7", "onhost")
		if p[0] != string(hostResolv) || p[1] != string(hostHosts)+"192.0.2.7\tdb\n" {
			t.Errorf("host network: resolv.conf %q, hosts %q", p[0], p[1])
		}
	})
}

// TestNetworkCLI: keel network create, ls, inspect and rm; rm is refused
// while a container is attached, a bad subnet with a clear error.
func TestNetworkCLI(t *testing.T) {
	t.Parallel()
	needCNI(t)
	k := startRunKeeld(t, "")
	def := testNetFor(t, k.env.root)
	// Another of this process's test networks for the new one (its
	// bridge goes at cleanup).
	front := testNetFor(t, k.env.root+"/front")
	sub, bridge := front.subnet, front.bridge
	for _, tc := range []struct{ subnet, want string }{
		{"10.1.2.3/24", "host bits are set"},
		{"not-a-subnet", "not a network"},
		{"10.1.2.0/31", "too small"},
		{def.subnet, "overlaps network \"bridge\""},
	} {
		if line := oneLineError(t, k.keel("network", "create", "--subnet", tc.subnet, "bad")); !strings.Contains(line, tc.want) {
			t.Errorf("create --subnet %s: %q, want %q", tc.subnet, line, tc.want)
		}
	}
	if line := oneLineError(t, k.keel("network", "create", "nosubnet")); !strings.Contains(line, "subnet is required") {
		t.Errorf("create without a subnet: %q", line)
	}
	k.ok("network", "create", "--subnet", sub, "--bridge", bridge, "--label", "team=a", "front")
	if names := strings.Fields(k.ok("network", "ls", "-q")); !slices.Equal(names, []string{"bridge", "front"}) {
		t.Errorf("network ls -q: %v", names)
	}
	ls := k.ok("network", "ls")
	if !strings.Contains(ls, "front") || !strings.Contains(ls, sub) || !strings.Contains(ls, "team=a") {
		t.Errorf("network ls:\n%s", ls)
	}
	k.ok("run", "-d", "--net", "bridge", "--net", "front", k.ref, "two", "/bin/busybox", "sleep", "1000")
	n := k.inspectNetwork(t, "front")
	if n.Bridge != bridge || n.Subnet != sub || len(n.Endpoints) != 1 || n.Endpoints[0].ContainerID != "two" || n.Endpoints[0].IfName != "eth1" {
		t.Errorf("inspect front: %+v", n)
	}
	if out := k.ok("task", "exec", "two", "/bin/busybox", "cat", "/proc/net/dev"); !strings.Contains(out, "eth0") || !strings.Contains(out, "eth1") {
		t.Errorf("two's interfaces: %q", out)
	}
	if line := oneLineError(t, k.keel("network", "rm", "front")); !strings.Contains(line, "attached") || !strings.Contains(line, "two") {
		t.Errorf("rm while attached: %q", line)
	}
	if line := oneLineError(t, k.keel("network", "rm", "bridge")); !strings.Contains(line, "default") {
		t.Errorf("rm the default: %q", line)
	}
	k.ok("container", "rm", "--force", "two")
	k.ok("network", "rm", "front")
	if line := oneLineError(t, k.keel("network", "inspect", "front")); !strings.Contains(line, "not found") {
		t.Errorf("inspect removed: %q", line)
	}
	if line := oneLineError(t, k.keel("run", "--rm", "--net", "nosuch", k.ref, "x", "true")); !strings.Contains(line, `network "nosuch"`) {
		t.Errorf("run on a missing network: %q", line)
	}
	if line := oneLineError(t, k.keel("run", "--rm", "--net", "none", "-p", "8080:80", k.ref, "x", "true")); !strings.Contains(line, "CNI networks") {
		t.Errorf("-p with --net none: %q", line)
	}
}

// TestNetworkPluginsMissing: with no CNI plugins, the bridge default fails
// naming the package, and --net none still runs.
func TestNetworkPluginsMissing(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	k := startRunKeeld(t, fmt.Sprintf("network {\n  cni_bin_dirs = [%q]\n  masquerade = false\n  default_route = false\n}\n", empty))
	line := oneLineError(t, k.keel("run", "--rm", k.ref, "nocni", "true"))
	for _, want := range []string{"containernetworking-plugins", "--net none", empty} {
		if !strings.Contains(line, want) {
			t.Errorf("run without plugins: %q, want %q in it", line, want)
		}
	}
	if out := k.ok("run", "--rm", "--net", "none", k.ref, "nonet", "/bin/busybox", "echo", "fine"); out != "fine\n" {
		t.Errorf("--net none without plugins: %q", out)
	}
}

// TestNetworkRunRmLeaves: many keel run --rm on the bridge leave no IP
// allocated, no pinned namespace, no record, no veth and no iptables rule.
func TestNetworkRunRmLeaves(t *testing.T) {
	t.Parallel()
	needCNI(t)
	k := startRunKeeld(t, "")
	sub := testNetFor(t, k.env.root).subnet
	mark := strings.TrimSuffix(sub, "0/24")
	// One first, so the plugins' own chains (CNI-FORWARD, CNI-HOSTPORT-*)
	// exist before the baseline.
	port := freePort(t)
	k.ok("run", "--rm", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), k.ref, "warm", "/bin/busybox", "true")
	before := iptablesRules(t)
	// The 200 go through the Go client (what an embedder does, without
	// a CLI process each); a CLI sample gives the user's timing.
	c := k.client(t, "default")
	ctx := t.Context()
	img, err := c.GetImage(ctx, k.ref)
	if err != nil {
		t.Fatal(err)
	}
	const runs = 200
	start := time.Now()
	for i := range runs {
		id := fmt.Sprintf("rm%d", i)
		if code := runRm(t, c, img, id, client.WithNetwork(), client.WithPortMap(client.PortMapping{HostIP: "127.0.0.1", HostPort: uint16(port), ContainerPort: 80})); code != 0 {
			t.Fatalf("run %d: exit %d", i, code)
		}
	}
	clientTook := time.Since(start) / runs
	timeCLI := func(args ...string) time.Duration {
		start := time.Now()
		for i := range 20 {
			k.ok(append(append([]string{"run", "--rm"}, args...), k.ref, fmt.Sprintf("cli%d", i), "/bin/busybox", "true")...)
		}
		return time.Since(start) / 20
	}
	bridgeTook := timeCLI("-p", fmt.Sprintf("127.0.0.1:%d:80", port))
	noneTook := timeCLI("--net", "none")
	t.Logf("run --rm each: Go client on the bridge with a port %v (over %d); keel run --rm: bridge with -p %v, --net none %v (over 20)", clientTook, runs, bridgeTook, noneTook)
	if left := k.netLeftovers(t); len(left) > 0 {
		t.Errorf("left after %d runs: %v", runs, left)
	}
	// Other tests' containers come and go meanwhile: of what changed,
	// only the rules of this keeld's subnet and containers count.
	after := iptablesRules(t)
	if d := keelRules(diffLines(before, after), mark, `id: \"default--rm`, `id: \"default--cli`); len(d) > 0 {
		t.Errorf("iptables changed over %d runs:\n%s", runs, strings.Join(d, "\n"))
	}
	if r := keelRules(after, mark); len(r) > 0 {
		t.Errorf("iptables rules of the test's subnet left:\n%s", strings.Join(r, "\n"))
	}
}

// diffLines are the lines only in a (-) or only in b (+), both sorted.
func diffLines(a, b []string) []string {
	var d []string
	for _, l := range a {
		if _, ok := slices.BinarySearch(b, l); !ok {
			d = append(d, "- "+l)
		}
	}
	for _, l := range b {
		if _, ok := slices.BinarySearch(a, l); !ok {
			d = append(d, "+ "+l)
		}
	}
	return d
}

// TestNetworkRestart: a SIGKILLed keeld's running containers keep their
// network across its restart; attachments whose tasks are gone (keeld
// killed between the record and the CNI ADD; a task's runtime state
// removed behind keeld's back) are released by the next start or
// collection.
func TestNetworkRestart(t *testing.T) {
	needCNI(t)
	k := startRunKeeld(t, "")
	// A failure while keeld is killed leaves running containers and
	// their networks: a keeld started again removes them.
	t.Cleanup(func() {
		select {
		case <-k.done:
			k.restart(t)
		default:
		}
	})
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	k.ok("run", "-d", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), k.ref, "web", "sh", "-c", httpdScript("web"))
	waitHTTP(t, url, "hello from web\n")
	ip := k.ipOf(t, "bridge", "web")

	// (a) keeld dies; web keeps its network, the restarted keeld too.
	k.kill()
	waitHTTP(t, url, "hello from web\n")
	k = k.restart(t)
	waitHTTP(t, url, "hello from web\n")
	if out := k.ok("run", "--rm", k.ref, "client", "/bin/busybox", "wget", "-q", "-O-", "http://"+ip+"/"); out != "hello from web\n" {
		t.Errorf("wget after keeld's restart: %q", out)
	}
	if got := k.ipOf(t, "bridge", "web"); got != ip {
		t.Errorf("web's address after restart: %s, was %s", got, ip)
	}

	// (b) a task's runtime state goes while keeld is down: its shim and
	// processes killed, its task dir removed.
	k.ok("run", "-d", k.ref, "lost", "/bin/busybox", "sleep", "1000")
	lostPid := int(k.tasks()["lost"].Pid)
	k.kill()
	loseTask(t, k.env.state, "default--lost", lostPid)
	k = k.restart(t)
	if left := k.netLeftovers(t); !onlyOf(left, "default--web") {
		t.Errorf("after a start with lost's task gone: %v", left)
	}

	// (c) keeld dies right after an attachment's record, before the ADD:
	// the next start tears the record down.
	k.kill()
	crashing := spawnEnv(t, k.env, k.cmd.Args[len(k.cmd.Args)-1], "KEEL_TEST_NETWORK_CRASH=after-record")
	crashing.waitReady()
	r := runKeel(t, k.env.socket, nil, "run", "-d", k.ref, "crashy", "/bin/busybox", "sleep", "1000")
	<-crashing.done
	if r.code == 0 {
		t.Fatalf("run through a crashing keeld: %v", r)
	}
	if _, err := os.Stat(filepath.Join(k.env.state, "network", "attachments", "default--crashy.json")); err != nil {
		t.Fatalf("the crash left no record: %v", err)
	}
	k = k.restart(t)
	if left := k.netLeftovers(t); !onlyOf(left, "default--web") {
		t.Errorf("after a start past a crash mid-attach: %v", left)
	}
	k.keel("container", "rm", "--force", "crashy")

	// (d) a task's runtime state goes while keeld runs (the runtime
	// plugin restarted without it): the next collection releases it.
	k.ok("run", "-d", k.ref, "lost2", "/bin/busybox", "sleep", "1000")
	lostPid = int(k.tasks()["lost2"].Pid)
	loseTask(t, k.env.state, "default--lost2", lostPid)
	killRuntimePlugin(t, k.keeld)
	if _, ok := k.tasks()["lost2"]; ok {
		t.Fatalf("lost2's task is still listed")
	}
	// The reconcile follows the collection in the background.
	k.ok("gc")
	eventually(t, 30*time.Second, "lost2's network released after a collection", func() error {
		if left := k.netLeftovers(t); !onlyOf(left, "default--web") {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
	waitHTTP(t, url, "hello from web\n")

	k.ok("container", "rm", "--force", "web")
	k.keel("container", "rm", "--force", "lost")
	k.keel("container", "rm", "--force", "lost2")
	if left := k.netLeftovers(t); len(left) > 0 {
		t.Errorf("left at the end: %v", left)
	}
}

// onlyOf tells whether every leftover is task tid's (its record, IP file,
// pin or veth).
func onlyOf(left []string, tid string) bool {
	var recs, pins, ips, veths int
	for _, l := range left {
		switch {
		case strings.HasPrefix(l, "veth: "):
			veths++
		case strings.HasPrefix(l, "netns/"):
			if l != "netns/"+tid {
				return false
			}
			pins++
		case strings.Contains(l, "/attachments/"):
			if !strings.HasSuffix(l, "/"+tid+".json") {
				return false
			}
			recs++
		case strings.Contains(l, "/cache/"):
			if !strings.Contains(l, tid) {
				return false
			}
		case strings.Contains(l, "/ipam/"):
			ips++
		default:
			return false
		}
	}
	return recs == 1 && pins == 1 && ips == 1 && veths == 1
}

// loseTask kills task tid's process (pid) and its shim, and removes the
// runtime plugin's state of it: the runtime no longer knows the task.
func loseTask(t *testing.T, state, tid string, pid int) {
	t.Helper()
	shim := ppid(t, pid)
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{shim, pid} {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "lost task's processes gone", func() error {
		if alive(pid) || alive(shim) {
			return fmt.Errorf("pid %d or shim %d still runs", pid, shim)
		}
		return nil
	})
	dirs, _ := filepath.Glob(filepath.Join(state, "plugins", "*", "tasks", tid))
	if len(dirs) != 1 {
		t.Fatalf("task dir of %s: %v", tid, dirs)
	}
	// What the runtime would have undone: the rootfs mount, the cgroup.
	if err := syscall.Unmount(filepath.Join(dirs[0], "bundle", "rootfs"), syscall.MNT_DETACH); err != nil && err != syscall.EINVAL {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dirs[0]); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 || f[2] == "/" {
			continue
		}
		for _, ctl := range []string{strings.TrimPrefix(f[1], "name="), "unified"} {
			if ctl != "" {
				os.Remove(filepath.Join("/sys/fs/cgroup", ctl, f[2]))
			}
		}
		os.Remove(filepath.Join("/sys/fs/cgroup", f[2]))
	}
}

// runRm is keel run --rm through the Go client: a container of img with
// opts runs /bin/busybox true and goes; its exit code.
func runRm(t *testing.T, c *client.Client, img client.Image, id string, opts ...client.NewContainerOpt) uint32 {
	t.Helper()
	ctx := t.Context()
	ct, err := c.NewContainer(ctx, id, append([]client.NewContainerOpt{
		client.WithImage(img), client.WithNewSnapshot(id, img),
		client.WithNewSpec(oci.WithImageConfig(c.LocalImage(img)), oci.WithProcessArgs("/bin/busybox", "true")),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ct.Delete(ctx, client.WithForce); err != nil {
			t.Fatal(err)
		}
	}()
	task, err := ct.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	code, _, err := (<-exited).Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	return code
}
