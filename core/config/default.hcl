# keeld's default config: what keeld runs with when it is given no file
# (`keeld config default` prints this file). Every key is here; those
# commented out are at their default value. config.hcl.example says more of
# each. Errors in this file name its file, line and column.

# Persistent data: metadata and each plugin's own data. Absolute.
# root = "/var/lib/keel"

# Runtime data (sockets, pids), gone on reboot. Absolute.
# state = "/run/keel"

# trace, debug, info, warn or error; a SIGHUP applies a change.
# log_level = "info"

# keeld's log as lines of text ("text") or of JSON ("json"); changing it
# needs a restart.
# log_format = "text"

# Where relative plugin paths resolve; "" is the keeld executable's
# directory.
# plugin_dir = ""

# How many blobs one pull fetches at once, 1 to 64.
# max_concurrent_downloads = 3

# The API: a unix socket, mode 0660, owned by uid:gid.
# grpc {
#   address = "/run/keel/keel.sock"
#   uid     = 0
#   gid     = 0
# }

# Prometheus metrics over HTTP at host:port; "" turns them off.
# metrics {
#   address = ""
# }

# Garbage collection: the periodic interval ("0": none) and how long a
# partial download is kept to be resumed.
# gc {
#   interval       = "10m"
#   ingest_max_age = "24h"
# }

# The event exchange: how many recent events keeld keeps for a subscriber
# to replay (keel events --since), 16 to 1048576.
# events {
#   window = 4096
# }

# Limits on the work one image may cause (pulls, unpacks, imports).
# limits {
#   max_layers              = 128
#   max_layer_size          = "16GiB"
#   max_layer_unpacked_size = "32GiB"
#   max_image_unpacked_size = "64GiB"
#   max_unpack_ratio        = 100
#   max_manifest_size       = "8MiB"
#   max_index_manifests     = 256
#   max_archive_entries     = 100000
# }

# Rotation of containers' logs.
# container_logs {
#   max_size  = "10MiB"
#   max_files = 3
# }

# Container networking (CNI) and the default network.
# network {
#   cni_bin_dirs  = ["/usr/lib/cni", "/opt/cni/bin"]
#   cni_conf_dir  = "/var/lib/keel/cni/net.d"
#   name          = "bridge"
#   bridge        = "keel0"
#   subnet        = "10.7.0.0/24"
#   masquerade    = true
#   default_route = true
# }

# The CRI server for Kubernetes' kubelet (keel-cri): keeld starts it when
# enabled, restarts it with backoff if it dies and stops it at its exit.
# address is its unix socket (kubelet's --container-runtime-endpoint),
# path its executable (a relative one resolves against plugin_dir),
# namespace the keel namespace of its images, pods and containers, and
# sandbox_image the pods' pause image (by default one keel-cri makes from
# keel-pause, localhost/keel/pause:<keel's version>). stream_address and
# stream_port are where its streaming server (exec, attach, port-forward)
# listens: an IP and a TCP port, "0" for a free one; the kubelet connects
# to it.
# cri {
#   enabled        = false
#   address        = "/run/keel/cri.sock"
#   path           = "keel-cri"
#   namespace      = "k8s.io"
#   sandbox_image  = "localhost/keel/pause:VERSION"   # VERSION: keel's own
#   stream_address = "127.0.0.1"
#   stream_port    = "0"
# }

# One block per plugin instance: plugin "<kind>" "<name>" { ... }; a
# relative path resolves against plugin_dir. With no config file, keeld
# keeps overlay when its root can host overlay upper dirs and native
# otherwise; with this file, remove the overlay block and name native
# below on such a root.
plugin "snapshotter" "overlay" {
  path = "keel-snapshotter-overlay"
}

plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}

# The snapshotter of calls that name none.
default_snapshotter = "overlay"

plugin "content" "local" {
  path = "keel-content-local"
  # The keys every plugin block takes, at their defaults:
  # hex SHA-256 the executable must have ("": unchecked),
  # sha256 = ""
  # environment variables of its process,
  # env = {}
  # start it on its first call rather than with keeld (never a runtime),
  # lazy_start = false
  # stop it after this long with no call ("0": never),
  # idle_stop = "30s"
  # and its own settings, handed to it as JSON; a SIGHUP restarts the
  # plugin alone with a changed block.
  # config {}
}

plugin "runtime" "runc" {
  path = "keel-runtime-runc"
}

plugin "resolver" "docker" {
  path = "keel-resolver-docker"
}
