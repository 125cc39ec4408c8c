// Command keel-snapshotter-btrfs is keel's btrfs snapshotter plugin: each
// snapshot is a btrfs subvolume, so Prepare and Commit copy no data.
package main

import "github.com/keel-runtime/keel/plugins/snapshotter-btrfs/btrfs"

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { btrfs.Main(version) }
