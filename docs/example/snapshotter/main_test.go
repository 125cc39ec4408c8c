package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/test/conformance"
)

// In process: New served over in-memory gRPC, as keeld would call it.
func TestConformance(t *testing.T) {
	conformance.Snapshotter(conformance.Go(t), conformance.InProcessSnapshotter(New))
}

// The built executable, launched exactly as keeld launches it.
func TestConformanceBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	bin := filepath.Join(t.TempDir(), "keel-snapshotter-copy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	conformance.Snapshotter(conformance.Go(t), conformance.BinarySnapshotter(bin))
}
