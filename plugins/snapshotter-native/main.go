// Command keel-snapshotter-native is keel's copy-based snapshotter plugin:
// it works on any filesystem, at the cost of a full copy per snapshot.
package main

import "github.com/keel-runtime/keel/plugins/snapshotter-native/native"

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { native.Main(version) }
