# keeld's built-in config, used when no config file is given: default
# directories, the local content store, a snapshotter and the runc runtime
# found beside the keeld executable. Both snapshotters are listed; keeld
# keeps overlay when its root can host overlay upper dirs and native
# otherwise (see PickDefaultSnapshotter).
plugin "snapshotter" "overlay" {
  path = "keel-snapshotter-overlay"
}

plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}

default_snapshotter = "overlay"

plugin "content" "local" {
  path = "keel-content-local"
}

plugin "runtime" "runc" {
  path = "keel-runtime-runc"
}

plugin "resolver" "docker" {
  path = "keel-resolver-docker"
}
