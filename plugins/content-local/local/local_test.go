package local_test

import (
	"testing"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/contenttest"
)

// TestConformance runs the content suite in process, across gRPC.
func TestConformance(t *testing.T) {
	contenttest.Run(conformance.Go(t), contenttest.InProcess(local.New))
}
