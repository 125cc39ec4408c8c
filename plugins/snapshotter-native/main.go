// Command keel-snapshotter-native is keel's copy-based snapshotter plugin:
// it works on any filesystem, at the cost of a full copy per snapshot.
package main

import (
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// version is set at build time.
var version = "dev"

func main() {
	sdk.Serve(snapshot.Plugin("native", version, native.New))
}
