#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME (go test's -fuzztime: 60s, 10000x)
# each, one after the other (go test -fuzz takes one target of one package
# a call), and prints the executions of each. A target that fails leaves
# its input under its package's testdata/fuzz/<target>/: commit it with the
# fix, as a regression seed. Exits non-zero when any target failed.
# FUZZPARALLEL sets the workers per target (go test's default: GOMAXPROCS).
set -uo pipefail
cd "$(dirname "$0")/.."

fuzztime="${1:-${FUZZTIME:-60s}}"
parallel=()
[ -n "${FUZZPARALLEL:-}" ] && parallel=(-parallel "$FUZZPARALLEL")

# package target: each target beside the code it tests.
targets=(
  "./core/images FuzzNormalizeName"
  "./plugins/resolver-docker/docker FuzzParseRef"
  "./core/images FuzzParsePlatform"
  "./core/config FuzzParse"
  "./core/images FuzzManifestGraph"
  "./core/images FuzzImport"
  "./core/diff FuzzApplyContained"
  "./test/difftest FuzzApplyDifferential"
  "./test/difftest FuzzFilterDifferential"
  "./client/oci FuzzParseEnvFile"
  "./sdk/crilog FuzzParseRecord"
)

# shutdown_race tells Go's fuzz coordinator race (go.dev/issue/75804, fixed
# in Go 1.27) from a finding: the target "fails" with a bare "context
# deadline exceeded" as -fuzztime ends, on a loaded machine, having written
# no failing input and seen no panic or test error.
shutdown_race() {
  grep -q 'context deadline exceeded' "$1" &&
    ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$1"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
failed=0
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  # A package of the sdk module is fuzzed from that module (go test -fuzz
  # takes packages of the main module only).
  mod=.
  case "$pkg" in ./sdk/*) mod=sdk; pkg="./${pkg#./sdk/}" ;; esac
  echo "== fuzz $name ($pkg, $fuzztime)"
  # Minimizing a new input is capped: inputs whose coverage varies from run
  # to run (background goroutines) would otherwise take a minute each.
  (cd "$mod" && go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 10x "${parallel[@]}" "$pkg") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  result=ok
  if [ "$rc" != 0 ]; then
    if shutdown_race "$log"; then
      result="ok (go.dev/issue/75804 at the fuzztime boundary, no failing input)"
    else
      result=FAIL
      failed=1
    fi
  fi
  summary+=("$(printf '%-24s %-34s %12s execs  %s' "$name" "$pkg" "${execs:-0}" "$result")")
done
echo "== fuzz summary ($fuzztime each)"
printf '%s\n' "${summary[@]}"
exit "$failed"
