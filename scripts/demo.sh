#!/usr/bin/env bash
# Sets keel up on this machine and shows it working: installs what it needs,
# builds keel, starts keeld with its default config (no config file: data
# under /var/lib/keel, socket /run/keel/keel.sock), starts a registry on
# loopback, puts a small busybox image in it, then pulls the image and runs a
# container from it. keeld and the registry keep running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (keeld mounts, and runs containers)" >&2; exit 1; }

packages=(make runc docker-registry busybox-static containernetworking-plugins iptables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

make build
keel=bin/keel
sock=/run/keel/keel.sock
demo=/run/keel/demo
registry=127.0.0.1:5000
image=$registry/demo/busybox:latest
mkdir -p "$demo"

if ! $keel --address "$sock" version >/dev/null 2>&1; then
  nohup bin/keeld >"$demo/keeld.log" 2>&1 &
  echo "keeld started (pid $!), logging to $demo/keeld.log"
  for _ in $(seq 100); do
    $keel --address "$sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# A registry on loopback (no internet here): Debian's docker-registry.
if ! curl -fsS "http://$registry/v2/" >/dev/null 2>&1; then
  cat >"$demo/registry.yml" <<YML
version: 0.1
storage: { filesystem: { rootdirectory: $demo/registry } }
http: { addr: $registry }
YML
  nohup docker-registry serve "$demo/registry.yml" >"$demo/registry.log" 2>&1 &
  echo "docker-registry started (pid $!) on $registry"
  for _ in $(seq 100); do
    curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# readme-test: begin (test/e2e/readme_test.go runs from here to "end",
# literally, after the assignments of keel, registry and image above)
# A busybox image as `docker save` writes it, pushed to the registry.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/image"
cp /bin/busybox "$work/rootfs/bin/busybox"
for cmd in sh echo cat ls uname id sleep ps; do ln -s busybox "$work/rootfs/bin/$cmd"; done
tar -C "$work/rootfs" --numeric-owner --owner=0 --group=0 -cf "$work/image/layer.tar" .
diffid=sha256:$(sha256sum "$work/image/layer.tar" | cut -d' ' -f1)
cat >"$work/image/config.json" <<JSON
{"architecture":"$(go env GOARCH)","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["$diffid"]}}
JSON
echo "[{\"Config\":\"config.json\",\"RepoTags\":[\"$image\"],\"Layers\":[\"layer.tar\"]}]" >"$work/image/manifest.json"
tar -C "$work/image" -cf "$work/busybox.tar" .

set -x
$keel version
$keel plugins ls
$keel image import "$work/busybox.tar"
$keel image push "$image"
$keel image rm --sync "$image"   # and collect its content, so the pull fetches it
$keel image pull "$image"
$keel image ls
$keel run --rm "$image" demo-hello echo hello from a keel container
{ set +x; } 2>/dev/null
# readme-test: end
echo
echo "keeld and the registry are running; stop them with: pkill -TERM -x keeld; pkill -TERM -x docker-registry"
