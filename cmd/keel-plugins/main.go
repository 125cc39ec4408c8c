// Command keel-plugins is every plugin keel ships in one executable,
// installed under each plugin's name (hard links, or copies): run as
// keel-content-local it is that plugin, and so on. Each plugin is still its
// own process, started, checksummed and supervised by keeld as any other;
// sharing the executable shares its code pages between them.
//
// `keel-plugins NAME [ARGS]` runs the plugin NAME as well, for a name that
// cannot be the executable's.
//
// keel-runtime-runc's task shims are not: they run keel-runtime-runc-shim
// (cmd/keel-runtime-runc-shim), a small executable of their own.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/plugins/resolver-docker/docker"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc"
	"github.com/keel-runtime/keel/plugins/snapshotter-btrfs/btrfs"
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/plugins/snapshotter-overlay/overlay"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

// plugins maps each executable name to its plugin's main.
var plugins = map[string]func(version string){
	"keel-content-local":       local.Main,
	"keel-resolver-docker":     docker.Main,
	"keel-runtime-runc":        runc.Main,
	"keel-snapshotter-btrfs":   btrfs.Main,
	"keel-snapshotter-native":  native.Main,
	"keel-snapshotter-overlay": overlay.Main,
}

func main() {
	if run, ok := plugins[filepath.Base(os.Args[0])]; ok {
		run(version)
		return
	}
	if len(os.Args) > 1 {
		if run, ok := plugins[os.Args[1]]; ok {
			os.Args = os.Args[1:]
			run(version)
			return
		}
	}
	names := make([]string, 0, len(plugins))
	for n := range plugins {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintf(os.Stderr, "keel-plugins %s: the plugins keel ships, in one executable: run it under a plugin's name (a hard link), or as `keel-plugins NAME`; NAME is one of:\n  %s\n",
		version, strings.Join(names, "\n  "))
	os.Exit(2)
}
