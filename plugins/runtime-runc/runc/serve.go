package runc

import (
	"os"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// Main serves the plugin until keeld stops it, or, run with the arguments
// `shim DIR`, is the shim of one task (what the plugin runs when no
// keel-runtime-runc-shim is beside it): the whole of keel-runtime-runc's
// main, and of keel-plugins run under that name.
func Main(version string) {
	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
		os.Exit(shim.Main(os.Args[2:]))
	}
	sdk.Serve(keelruntime.Plugin("runc", version, New))
}
