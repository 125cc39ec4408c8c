package btrfs

import (
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// Main serves the plugin until keeld stops it: the whole of
// keel-snapshotter-btrfs's main, and of keel-plugins run under that name.
func Main(version string) { sdk.Serve(snapshot.Plugin("btrfs", version, New)) }
