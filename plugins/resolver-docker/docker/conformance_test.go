package docker

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/resolvertest"
)

// TestConformance runs the resolver suite in process, across gRPC.
func TestConformance(t *testing.T) {
	resolvertest.Run(conformance.Go(t), resolvertest.InProcess(New))
}

// TestConformanceBinary runs it against the built plugin, launched as
// keeld launches it (KEEL_BIN, set by make test).
func TestConformanceBinary(t *testing.T) {
	bin := os.Getenv("KEEL_BIN")
	if bin == "" {
		t.Skip("KEEL_BIN is not set (make test sets it)")
	}
	resolvertest.Run(conformance.Go(t), resolvertest.Binary(filepath.Join(bin, "keel-resolver-docker")))
}
