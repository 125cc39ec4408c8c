#!/usr/bin/env bash
# make verify-install: installs the built binaries twice into temp dirs and
# checks the result. Never touches the real /usr/local or /etc.
#  1. make install-files DESTDIR=D (PREFIX=/usr/local): the layout under D,
#     the plugins hard links of keel-plugins, the unit's paths filled in,
#     config.hcl from keeld config default, and an edited config.hcl kept
#     by a second install.
#  2. make install-files PREFIX=T/usr SYSCONFDIR=T/etc: systemd-analyze
#     verify passes on the unit with no word (it only warns, exit 0, on a
#     bad key), and the installed keeld finds every plugin of its config.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "verify-install: $*" >&2; exit 1; }

D=$tmp/destdir
make -s install-files DESTDIR="$D" >/dev/null
for f in usr/local/bin/keeld usr/local/bin/keel usr/local/bin/keel-runtime-runc-shim usr/local/bin/keel-cri usr/local/bin/keel-pause \
  usr/local/lib/systemd/system/keeld.service etc/keel/config.hcl; do
  [ -f "$D/$f" ] || fail "make install DESTDIR: no $f"
done
plugins_inode=$(stat -c %i "$D/usr/local/bin/keel-plugins")
for p in keel-snapshotter-native keel-snapshotter-overlay keel-content-local keel-snapshotter-btrfs keel-resolver-docker keel-runtime-runc; do
  [ "$(stat -c %i "$D/usr/local/bin/$p")" = "$plugins_inode" ] || fail "$p is not a hard link of keel-plugins"
done
# keel-cri copies keel-pause alone into the pause image: it must be static.
readelf -l "$D/usr/local/bin/keel-pause" | grep -q INTERP && fail "keel-pause is not a static executable"
grep -qx 'ExecStart=/usr/local/bin/keeld --config /etc/keel/config.hcl' "$D/usr/local/lib/systemd/system/keeld.service" ||
  fail "the unit's ExecStart is not /usr/local/bin/keeld --config /etc/keel/config.hcl"
grep -q '@[A-Z]*@' "$D/usr/local/lib/systemd/system/keeld.service" && fail "the unit has an @…@ left"
cmp -s "$D/etc/keel/config.hcl" <(bin/keeld config default) || fail "config.hcl is not keeld config default"
echo 'log_level = "debug"' >> "$D/etc/keel/config.hcl"
cp "$D/etc/keel/config.hcl" "$tmp/edited.hcl"
make -s install-files DESTDIR="$D" >/dev/null
cmp -s "$D/etc/keel/config.hcl" "$tmp/edited.hcl" || fail "a second install wrote over an existing config.hcl"

T=$tmp/prefix
make -s install-files PREFIX="$T/usr" SYSCONFDIR="$T/etc" >/dev/null
unit=$T/usr/lib/systemd/system/keeld.service
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify says: $out"
"$T/usr/bin/keeld" config validate "$T/etc/keel/config.hcl" >/dev/null
# Every plugin the installed config names, and keel-cri, resolves beside
# the installed keeld.
paths=$("$T/usr/bin/keeld" config dump --config "$T/etc/keel/config.hcl" | sed -n 's/^ *path *= *"\(.*\)"$/\1/p')
[ -n "$paths" ] || fail "keeld config dump names no plugin path"
for p in $paths; do
  [ "$(dirname "$p")" = "$T/usr/bin" ] || fail "plugin path $p is not beside the installed keeld"
  [ -x "$p" ] || fail "plugin $p is not installed"
done
echo "verify-install: ok"
