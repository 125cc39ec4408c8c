package local_test

import (
	"testing"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/test/conformance"
)

// TestConformance runs the content suite in process, across gRPC.
func TestConformance(t *testing.T) {
	conformance.Content(conformance.Go(t), conformance.InProcessContent(local.New))
}
