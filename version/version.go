// Package version holds keel's version, set at build time by the Makefile.
package version

import "runtime/debug"

// Version is set with -ldflags "-X github.com/keel-runtime/keel/version.Version=...".
var Version = "dev"

// Revision is the VCS revision the binary was built from, when known.
func Revision() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}
