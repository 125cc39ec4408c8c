package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestConformance runs the snapshotter suite on New, served over in-memory
// gRPC as keeld would call it.
func TestConformance(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	snapshottest.Run(conformance.Go(t), snapshottest.InProcess(New))
}

// TestConformanceBinary runs the suite on the built executable, launched as
// keeld launches it.
func TestConformanceBinary(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	bin := filepath.Join(t.TempDir(), "keel-snapshotter-layered")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	snapshottest.Run(conformance.Go(t), snapshottest.Binary(bin))
}
