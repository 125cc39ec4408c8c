// Command keel-runtime-runc-shim is the shim of one task of
// keel-runtime-runc (package plugins/runtime-runc/runc/shim), run by the
// plugin as `keel-runtime-runc-shim DIR` from beside its own executable.
// It is an executable of its own, apart from the plugins' keel-plugins,
// so that each of the many shims maps and initialises only what a shim
// needs: no gRPC, no protobuf, no go-plugin.
package main

import (
	"os"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
)

func main() { os.Exit(shim.Main(os.Args[1:])) }
