package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/test/conformance"
)

// The example is a whole plugin: it passes the snapshotter suite in process
// (across gRPC) and as the built executable, launched as keeld launches it.

func TestConformance(t *testing.T) {
	conformance.Snapshotter(conformance.Go(t), conformance.InProcessSnapshotter(New))
}

func TestConformanceBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	bin := filepath.Join(t.TempDir(), "example-snapshotter")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	conformance.Snapshotter(conformance.Go(t), conformance.BinarySnapshotter(bin))
}
