package critest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/critools"
)

// settle bounds how long a daemon may take to answer or to stop.
const settle = time.Minute

// startContainerd runs Debian's containerd (1.6) with its CRI plugin on
// scratch root and state dirs until the test ends, and returns its CRI
// endpoint. Every host of mirroredHosts resolves onto registryHost (plain
// HTTP, hosts.toml with that server only: no fallback to the internet);
// pods get a bridge of their own with no masquerade and no default route;
// the sandbox image is sandboxImage. At cleanup every pod goes (through
// the CRI, so CNI tears its network down), then containerd, any shim left,
// any mount left under its dirs, the bridge; what could not be removed
// fails the test.
func startContainerd(t *testing.T, registryHost string) string {
	t.Helper()
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			testkit.SkipOrFail(t, "%s: %v (apt-get install containerd)", bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "kcri")
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "c.sock")
	endpoint := "unix://" + socket
	net := newPodNetwork(t, filepath.Join(dir, "cni"))
	hosts := filepath.Join(dir, "certs.d")
	for _, h := range mirroredHosts {
		text := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+registryHost, "http://"+registryHost)
		if err := os.MkdirAll(filepath.Join(hosts, h), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(hosts, h, "hosts.toml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket, socket+".ttrpc", filepath.Join(dir, "opt"),
		critools.ContainerdCRI{SandboxImage: sandboxImage, RuncRoot: filepath.Join(dir, "runc"), CNIConfDir: net.confDir, RegistryConfigPath: hosts}.TOML())
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	runDaemon(t, "containerd", dir, endpoint, "containerd", "--config", filepath.Join(dir, "config.toml"))
	return endpoint
}

// runDaemon runs the runtime (containerd, keeld) whose files are all under
// dir until the test ends, and waits until its CRI answers at endpoint.
// At cleanup every pod goes through the CRI (so the runtime releases
// each pod's network), then the daemon (SIGTERM, SIGKILL after settle),
// any process left naming a path under dir (shims), any mount under dir,
// and dir itself. Its log is shown if the test failed.
func runDaemon(t *testing.T, name, dir, endpoint string, args ...string) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		removeAllPods(t, endpoint)
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(settle):
			t.Errorf("%s did not stop within %s of SIGTERM; killing it", name, settle)
			cmd.Process.Kill()
			<-done
		}
		killUnder(dir)
		unmountUnder(t, dir)
		if b, err := os.ReadFile(logPath); err == nil {
			if t.Failed() {
				t.Logf("%s log (last 8 KiB):\n%s", name, tail(b, 8<<10))
			}
			keepBesideOut("-"+name+".log", b)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited: %v\n%s", name, cmd.ProcessState, tail(b, 8<<10))
		default:
		}
		out, err := crictl(ctx, endpoint, "version")
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s's CRI does not answer at %s: %v\n%s", name, endpoint, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// crictl runs the cached crictl against endpoint.
func crictl(ctx context.Context, endpoint string, args ...string) ([]byte, error) {
	bin := filepath.Join(cacheDir(), "crictl-"+criToolsVersion)
	all := append([]string{"--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--timeout", "30s"}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	// No /etc/crictl.yaml: its absence is only warned about.
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	return cmd.CombinedOutput()
}

// removeAllPods stops and removes every pod through the CRI (the runtime
// then releases each pod's network), and fails the test if any is left.
func removeAllPods(t *testing.T, endpoint string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
	defer cancel()
	if out, err := crictl(ctx, endpoint, "rmp", "--all", "--force"); err != nil {
		t.Errorf("crictl rmp --all --force: %v\n%s", err, out)
	}
	out, err := crictl(ctx, endpoint, "pods", "-q")
	if err != nil {
		t.Errorf("crictl pods: %v\n%s", err, out)
	} else if left := strings.Fields(string(out)); len(left) > 0 {
		t.Errorf("pods left after crictl rmp --all --force: %v", left)
	}
}

// killUnder SIGKILLs every process with an argument naming a path under
// dir (the shims containerd or keel left: each names its daemon's socket).
func killUnder(dir string) {
	out, _ := exec.Command("pgrep", "-f", regexp.QuoteMeta(dir+"/")).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountUnder detaches every mount under dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Errorf("mounts under %s: %v", dir, err)
		return
	}
	// mountinfo lists a mount after the one it is on: undo in reverse.
	for _, m := range slices.Backward(ms) {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			t.Errorf("unmount %s: %v", m.Mountpoint, err)
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// podNetwork is the CNI network pods get: a bridge named after this
// process on a random 10.X.Y.0/24, with portmap for host ports, no
// masquerade and no default route, so that nothing a test runs reaches
// past the machine. host-local keeps its leases beside the conflist, not
// in /var/lib/cni.
type podNetwork struct {
	confDir, bridge, subnet string
}

func newPodNetwork(t *testing.T, confDir string) podNetwork {
	t.Helper()
	n := podNetwork{
		confDir: confDir,
		bridge:  fmt.Sprintf("kcri%d", os.Getpid()%100000),
		subnet:  fmt.Sprintf("10.%d.%d.0/24", 200+rand.IntN(50), rand.IntN(256)),
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "keel-critest",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, n.bridge, n.subnet, filepath.Join(confDir, "ipam"))
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-keel-critest.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteLink(t, n.bridge) })
	return n
}

// deleteLink removes a network interface, if it is there.
func deleteLink(t *testing.T, name string) {
	out, err := exec.Command("ip", "link", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Cannot find device") {
		t.Errorf("ip link del %s: %v: %s", name, err, out)
	}
}
