package overlay

import (
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// Main serves the plugin until keeld stops it: the whole of
// keel-snapshotter-overlay's main, and of keel-plugins run under that name.
func Main(version string) { sdk.Serve(snapshot.Plugin("overlay", version, New)) }
