package docker

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/test/conformance"
)

// TestConformance runs the resolver suite in process, across gRPC.
func TestConformance(t *testing.T) {
	conformance.Resolver(conformance.Go(t), conformance.InProcessResolver(New))
}

// TestConformanceBinary runs it against the built plugin, launched as
// keeld launches it (KEEL_BIN, set by make test).
func TestConformanceBinary(t *testing.T) {
	bin := os.Getenv("KEEL_BIN")
	if bin == "" {
		t.Skip("KEEL_BIN is not set (make test sets it)")
	}
	conformance.Resolver(conformance.Go(t), conformance.BinaryResolver(filepath.Join(bin, "keel-resolver-docker")))
}
