// Command keel-content-local is keel's local content store plugin: blobs
// as files under its root, addressed by digest.
package main

import (
	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { sdk.Serve(content.Plugin("local", version, local.New)) }
