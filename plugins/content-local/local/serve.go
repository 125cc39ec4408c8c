package local

import (
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
)

// Main serves the plugin until keeld stops it: the whole of
// keel-content-local's main, and of keel-plugins run under that name.
func Main(version string) { sdk.Serve(content.Plugin("local", version, New)) }
