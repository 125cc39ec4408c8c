package docker

import (
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// Main serves the plugin until keeld stops it: the whole of
// keel-resolver-docker's main, and of keel-plugins run under that name.
func Main(version string) { sdk.Serve(resolver.Plugin("docker", version, New)) }
