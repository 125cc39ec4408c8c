package native_test

import (
	"testing"

	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/test/conformance"
)

func TestConformance(t *testing.T) {
	conformance.Snapshotter(conformance.Go(t), conformance.InProcessSnapshotter(native.New))
}
