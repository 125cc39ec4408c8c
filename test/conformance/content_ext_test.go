package conformance_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/contenttest"
)

// TestContentBinary runs the content suite against the built
// keel-content-local, launched as keeld launches it: $KEEL_BIN's when set,
// else built here.
func TestContentBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and launches a plugin binary")
	}
	path := ""
	if dir := os.Getenv("KEEL_BIN"); dir != "" {
		path = filepath.Join(dir, "keel-content-local")
	} else {
		path = filepath.Join(t.TempDir(), "keel-content-local")
		cmd := exec.Command("go", "build", "-o", path, "github.com/keel-runtime/keel/plugins/content-local")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build keel-content-local: %v\n%s", err, out)
		}
	}
	contenttest.Run(conformance.Go(t), contenttest.Binary(path))
}
