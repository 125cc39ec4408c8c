// Command keel-snapshotter-overlay is keel's overlayfs snapshotter plugin:
// snapshots are directories stacked by one overlay mount, so a snapshot
// costs no copy. See README.md.
package main

import (
	"github.com/keel-runtime/keel/plugins/snapshotter-overlay/overlay"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// version is set at build time.
var version = "dev"

func main() {
	sdk.Serve(snapshot.Plugin("overlay", version, overlay.New))
}
