package conformance_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// thirdPartyDir is the module of the snapshotter plugin written from
// docs/writing-a-plugin.md alone, as a third party would: its own go.mod,
// requiring only the SDK.
var thirdPartyDir = filepath.Join("..", "thirdparty", "snapshotter-layered")

// keelBinary returns $KEEL_BIN/keel, or builds it.
func keelBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KEEL_BIN"); dir != "" {
		if p := filepath.Join(dir, "keel"); fileExists(p) {
			return p
		}
	}
	bin := filepath.Join(t.TempDir(), "keel")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/keel-runtime/keel/cmd/keel").CombinedOutput()
	if err != nil {
		t.Fatalf("build keel: %v\n%s", err, out)
	}
	return bin
}

// TestThirdPartyPlugin builds the third-party plugin in its own module, as
// its author would, and runs `keel conformance` on it: the whole snapshotter
// suite, DeepChain and RootAttributes included, must pass.
func TestThirdPartyPlugin(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	keel := keelBinary(t)
	plugin := filepath.Join(t.TempDir(), "keel-snapshotter-layered")
	build := exec.Command("go", "build", "-o", plugin, ".")
	build.Dir = thirdPartyDir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", thirdPartyDir, err, out)
	}

	out, err := exec.Command(keel, "conformance", "--kind", "snapshotter", plugin).CombinedOutput()
	if err != nil {
		t.Fatalf("keel conformance: %v\n%s", err, out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^DeepChain +PASS`),
		regexp.MustCompile(`(?m)^RootAttributes +PASS`),
		regexp.MustCompile(`(?m)^snapshotter .*: [1-9][0-9]* passed, 0 failed, `),
	} {
		if !want.Match(out) {
			t.Errorf("keel conformance output lacks %s:\n%s", want, out)
		}
	}
}
