#!/usr/bin/env bash
# Builds keel, starts keeld with its default config (no config file: the
# native snapshotter and the local content store, data under /var/lib/keel,
# socket /run/keel/keel.sock) and shows it working. keeld keeps running.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (keeld mounts and owns /var/lib/keel)" >&2; exit 1; }
make build
keel=bin/keel
sock=/run/keel/keel.sock

if ! $keel --address "$sock" version >/dev/null 2>&1; then
  mkdir -p /run/keel
  nohup bin/keeld >/run/keel/keeld.log 2>&1 &
  echo "keeld started (pid $!), logging to /run/keel/keeld.log"
  for _ in $(seq 50); do
    $keel --address "$sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

set -x
$keel version
$keel plugins ls
printf 'hello from keel\n' | $keel content ingest demo-hello
$keel content ls
$keel content get sha256:"$(printf 'hello from keel\n' | sha256sum | cut -d' ' -f1)"
$keel snapshot rm demo-child demo-base demo-active 2>/dev/null || true
$keel snapshot prepare demo-active
$keel snapshot commit demo-base demo-active
$keel snapshot prepare demo-child demo-base --target /mnt
$keel snapshot tree
{ set +x; } 2>/dev/null
echo
echo "keeld is running; stop it with: pkill -TERM -x keeld"
