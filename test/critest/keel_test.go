package critest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// keelBin is where keel's binaries are (make build): KEEL_BIN.
func keelBin(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KEEL_BIN")
	if dir == "" {
		t.Fatal("KEEL_CRITEST_TARGET=keel needs KEEL_BIN, the dir make build fills (bin/)")
	}
	return dir
}

// keelConfig is keeld's config for the keel target: every dir under dir,
// the overlay snapshotter, a resolver that maps each of mirroredHosts onto
// reg (no fallback), the runc runtime under a cgroup parent of its own, a
// default network like containerd's (bridge, no masquerade, no default
// route), and extra (the cri block).
func keelConfig(dir, binDir, registryURL, bridge, subnet, extra string) string {
	var hosts strings.Builder
	for _, h := range mirroredHosts {
		fmt.Fprintf(&hosts, `    host %q {
      fallback = false
      mirrors  = [%q]
      mirror %q {
        plain_http = true
      }
    }
`, h, registryURL, registryURL)
	}
	return fmt.Sprintf(`root = %q
state = %q
plugin_dir = %q
grpc {
  address = %q
}
network {
  bridge        = %q
  subnet        = %q
  masquerade    = false
  default_route = false
}
plugin "snapshotter" "overlay" {
  path = "keel-snapshotter-overlay"
}
plugin "content" "local" {
  path = "keel-content-local"
}
plugin "resolver" "docker" {
  path = "keel-resolver-docker"
  config {
%s  }
}
plugin "runtime" "runc" {
  path = "keel-runtime-runc"
  config {
    cgroup_parent = %q
  }
}
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), binDir, filepath.Join(dir, "k.sock"),
		bridge, subnet, hosts.String(), "/"+filepath.Base(dir), extra)
}

// criProbes are read-only calls (and a pull) a CRI server must answer
// before critest is worth running, by crictl command and the RPCs it
// makes.
var criProbes = []struct {
	args []string
	rpcs string
}{
	{[]string{"version"}, "RuntimeService.Version"},
	{[]string{"info"}, "RuntimeService.Status"},
	{[]string{"pods"}, "RuntimeService.ListPodSandbox"},
	{[]string{"ps", "-a"}, "RuntimeService.ListContainers"},
	{[]string{"stats"}, "RuntimeService.ListContainerStats"},
	{[]string{"statsp"}, "RuntimeService.ListPodSandboxStats"},
	{[]string{"images"}, "ImageService.ListImages"},
	{[]string{"imagefsinfo"}, "ImageService.ImageFsInfo"},
	{[]string{"pull", e2eImages + "busybox:1.29-2"}, "ImageService.PullImage"},
}

// requireKeelCRI skips the keel target while keel-cri is not built.
func requireKeelCRI(t *testing.T) {
	t.Helper()
	bin := keelBin(t)
	if _, err := os.Stat(filepath.Join(bin, "keel-cri")); err != nil {
		t.Skipf("keel target: %s/keel-cri is not built yet (issue 15): keel serves none of the CRI RuntimeService and ImageService RPCs critest calls", bin)
	}
}

// startKeel runs keeld with the CRI enabled (keel-cri, which keeld
// starts) until the test ends, and returns the CRI endpoint. It skips,
// naming them, while keel-cri is not built or answers any of criProbes
// Unimplemented (unless KEEL_CRITEST_PARTIAL is set: then the specs of
// those calls fail).
func startKeel(t *testing.T, reg *registry.Registry) string {
	t.Helper()
	bin := keelBin(t)
	dir, err := os.MkdirTemp("", "kcri")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "unix://" + filepath.Join(dir, "cri.sock")
	bridge := fmt.Sprintf("kcrk%d", os.Getpid()%100000)
	subnet := fmt.Sprintf("10.%d.%d.0/24", 200+rand.IntN(50), rand.IntN(256))
	t.Cleanup(func() { deleteLink(t, bridge) })
	cri := criBlock(strings.TrimPrefix(endpoint, "unix://"))
	cfg := filepath.Join(dir, "keeld.hcl")
	if err := os.WriteFile(cfg, []byte(keelConfig(dir, bin, reg.URL(), bridge, subnet, cri)), 0o644); err != nil {
		t.Fatal(err)
	}
	// runc removes each task's cgroup, not their parent (in every
	// hierarchy on cgroup v1).
	t.Cleanup(func() {
		parents, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", filepath.Base(dir)))
		for _, p := range append(parents, filepath.Join("/sys/fs/cgroup", filepath.Base(dir))) {
			os.Remove(p)
		}
	})
	runDaemon(t, "keeld", dir, endpoint, filepath.Join(bin, "keeld"), "--config", cfg)

	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	var missing []string
	for _, p := range criProbes {
		out, err := crictl(ctx, endpoint, p.args...)
		switch {
		case err == nil:
		case strings.Contains(string(out), "Unimplemented"):
			missing = append(missing, p.rpcs)
		default:
			t.Fatalf("crictl %s: %v\n%s", strings.Join(p.args, " "), err, out)
		}
	}
	if len(missing) > 0 && os.Getenv("KEEL_CRITEST_PARTIAL") != "" {
		// A slice's own run: the specs of the missing calls fail.
		t.Logf("keel target: keel-cri answers Unimplemented to %s (KEEL_CRITEST_PARTIAL: running anyway)", strings.Join(missing, ", "))
	} else if len(missing) > 0 {
		t.Skipf("keel target: keel-cri answers Unimplemented to %s", strings.Join(missing, ", "))
	}
	return endpoint
}

// TestKeelConfig: keeld accepts the keel target's config, cri block
// included, as `keeld config validate` says, when KEEL_BIN holds keeld.
func TestKeelConfig(t *testing.T) {
	bin := os.Getenv("KEEL_BIN")
	if bin == "" {
		t.Skip("KEEL_BIN is not set (make test sets it)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keeld.hcl")
	text := keelConfig(dir, bin, "http://127.0.0.1:5000", "kcrk0", "10.250.0.0/24", criBlock(filepath.Join(dir, "cri.sock")))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(bin, "keeld"), "config", "validate", cfg).CombinedOutput(); err != nil {
		t.Fatalf("keeld config validate: %v\n%s\n%s", err, out, text)
	}
}

// criBlock is the keel target's cri block: keel-cri on socket, with the
// stand-in sandbox image.
func criBlock(socket string) string {
	return fmt.Sprintf("cri {\n  enabled = true\n  address = %q\n  sandbox_image = %q\n}\n", socket, sandboxImage)
}
