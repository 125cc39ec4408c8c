// Command keel-runtime-runc is keel's runtime plugin over runc (or crun).
// Run as `keel-runtime-runc shim DIR`, it is the shim of one task.
package main

import (
	"os"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// version is set at build time.
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
		os.Exit(shim.Main(os.Args[2:]))
	}
	sdk.Serve(runtime.Plugin("runc", version, runc.New))
}
