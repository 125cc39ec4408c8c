// Command keel-snapshotter-btrfs is keel's btrfs snapshotter plugin: each
// snapshot is a btrfs subvolume, so Prepare and Commit copy no data.
package main

import (
	"github.com/keel-runtime/keel/plugins/snapshotter-btrfs/btrfs"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// version is set at build time.
var version = "dev"

func main() {
	sdk.Serve(snapshot.Plugin("btrfs", version, btrfs.New))
}
