// Command keel-runtime-runc is keel's runtime plugin over runc (or crun).
// Run as `keel-runtime-runc shim DIR`, it is the shim of one task.
package main

import "github.com/keel-runtime/keel/plugins/runtime-runc/runc"

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { runc.Main(version) }
