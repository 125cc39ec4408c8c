// Package critools builds the cri-tools binaries (crictl, critest) the
// tests and benchmarks drive CRI runtimes with, at one pinned version,
// from the Go module proxy, once per machine (a cache dir).
package critools

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Module and Version are the cri-tools module critest and crictl are built
// from, at the pinned version.
const (
	Module  = "sigs.k8s.io/cri-tools"
	Version = "v1.37.0"
)

// CacheDir holds the built binaries, so that CI builds them once:
// KEEL_CRITEST_CACHE, or /var/cache/keel-test.
func CacheDir() string {
	if d := os.Getenv("KEEL_CRITEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/keel-test"
}

// Tool returns the path of critest or crictl at Version, built from the Go
// module proxy unless the cache holds it. critest is a test binary (go
// test -c of cmd/critest, as upstream's Makefile builds it); both are
// built in the module's own directory, with its go.sum: the checksum
// database may not list cri-tools, so that one module, and nothing else,
// is exempt from it (GONOSUMDB).
func Tool(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(CacheDir(), name+"-"+Version)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	env := append(os.Environ(), "GONOSUMDB="+Module, "GOFLAGS=-mod=readonly", "CGO_ENABLED=0")
	// Outside any module, so that keel's go.mod plays no part.
	dl := exec.Command("go", "mod", "download", "-json", Module+"@"+Version)
	dl.Dir, dl.Env = t.TempDir(), env
	out, err := dl.Output()
	if err != nil {
		t.Fatalf("go mod download %s@%s: %v\n%s", Module, Version, err, stderrOf(err))
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s@%s: %v %s", Module, Version, err, mod.Error)
	}
	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	// The version as upstream's Makefile stamps it (without the v).
	ldflags := "-X " + Module + "/pkg/version.Version=" + strings.TrimPrefix(Version, "v")
	args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "./cmd/crictl"}
	if name == "critest" {
		args = []string{"test", "-c", "-trimpath", "-ldflags", ldflags, "-o", tmp, "./cmd/critest"}
	}
	build := exec.Command("go", args...)
	build.Dir, build.Env = mod.Dir, env
	if b, err := build.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("build %s %s: %v\n%s", name, Version, err, b)
	}
	// Renamed into place whole: a concurrent run sees it built or absent.
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s from %s@%s into %s", name, Module, Version, bin)
	return bin
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// ContainerdCRI is what the tests and benchmarks set of containerd 1.6's
// CRI plugin.
type ContainerdCRI struct {
	// SandboxImage is the pods' pause image.
	SandboxImage string
	// RuncRoot is runc's state dir (not /run/containerd/runc).
	RuncRoot string
	// CNIConfDir holds the pods' CNI network (plugins in /usr/lib/cni).
	CNIConfDir string
	// RegistryConfigPath is the certs.d dir of hosts.toml files.
	RegistryConfigPath string
}

// TOML is the CRI plugin's config tables: c's settings, the streaming
// server on a free loopback port, overlayfs, runc through
// containerd-shim-runc-v2.
func (c ContainerdCRI) TOML() string {
	return fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This machine may not lower a process's oom_score_adj (runc fails on
  # the sandbox's -998): keep pods' no lower than containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, c.SandboxImage, c.RuncRoot, c.CNIConfDir, c.RegistryConfigPath)
}
