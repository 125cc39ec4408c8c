// Command keel-snapshotter-overlay is keel's overlayfs snapshotter plugin:
// snapshots are directories stacked by one overlay mount, so a snapshot
// costs no copy. See README.md.
package main

import "github.com/keel-runtime/keel/plugins/snapshotter-overlay/overlay"

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { overlay.Main(version) }
