// Command keel-resolver-docker is keel's registry resolver plugin: image
// references to descriptors, and blobs and manifests between OCI (and
// Docker) registries and keeld.
package main

import "github.com/keel-runtime/keel/plugins/resolver-docker/docker"

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() { docker.Main(version) }
