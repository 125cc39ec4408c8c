// Command keel-runtime-runc is keel's runtime plugin over runc (or crun).
// Its tasks' shims run keel-runtime-runc-shim, installed beside it; run as
// `keel-runtime-runc shim DIR`, it is the shim of one task too (without
// that executable, and for shims of older plugins).
package main

import "github.com/keel-runtime/keel/plugins/runtime-runc/runc"

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { runc.Main(version) }
