# keeld's built-in config, used when no config file is given: default
# directories, and the native snapshotter and local content store found
# beside the keeld executable.
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}

plugin "content" "local" {
  path = "keel-content-local"
}
