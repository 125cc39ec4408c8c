package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/core/config"
)

// TestReadmeKubernetes: the README's Kubernetes section holds: its cri
// block enables keel-cri at the socket its kubelet flag and crictl.yaml
// name (keeld's default), and crictl with that crictl.yaml (the socket
// moved to the test's) talks to a keel-cri.
func TestReadmeKubernetes(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(moduleRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const heading = "## Kubernetes: point a kubelet at keel"
	block := func(lang string) string {
		t.Helper()
		b, err := readmeFence(string(readme), heading, lang)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The block goes into a config that has its plugins.
	cfg, err := config.Parse([]byte(block("hcl")+"plugin \"content\" \"local\" {\n  path = \"keel-content-local\"\n}\n"), "README.md")
	if err != nil {
		t.Fatal(err)
	}
	cri := cfg.CRIConfig()
	endpoint := "unix://" + cri.Address
	if !cri.Enabled || cri.Address != filepath.Join(config.DefaultState, config.DefaultCRISocketName) {
		t.Errorf("the README's cri block: %+v, want enabled at the default address", cri)
	}
	if flags := block("text"); !strings.Contains(flags, "--container-runtime-endpoint="+endpoint+"\n") || !strings.Contains(flags, "--cgroup-driver=cgroupfs\n") {
		t.Errorf("the README's kubelet flags do not name %s and cgroupfs:\n%s", endpoint, flags)
	}
	yaml := block("yaml")
	if strings.Count(yaml, endpoint+"\n") != 2 {
		t.Errorf("the README's crictl.yaml does not name %s twice:\n%s", endpoint, yaml)
	}

	k := startCRIKeeld(t, nil)
	path := filepath.Join(k.env.dir, "readme-crictl.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(yaml, endpoint, "unix://"+k.socket)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, crictl(t), "--config", path, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "RuntimeName:  keel") {
		t.Errorf("crictl with the README's crictl.yaml: %v\n%s", err, out)
	}
}
