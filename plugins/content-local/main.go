// Command keel-content-local is keel's local content store plugin: blobs
// as files under its root, addressed by digest.
package main

import "github.com/keel-runtime/keel/plugins/content-local/local"

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { local.Main(version) }
