#!/usr/bin/env bash
# The project's test command (README.md): installs what is missing, then checks formatting,
# lints and runs every test, unit and end-to-end, against real components, then the fuzz
# targets briefly. Each phase's wall time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
times=()
phase() { # NAME COMMAND...: runs one phase and records its wall time
  local name=$1 start=$SECONDS rc=0
  shift
  echo "== $name"
  "$@" || rc=$?
  times+=("$(printf '%-8s %4ds%s' "$name" $((SECONDS - start)) "$([ $rc -eq 0 ] || echo " (exit $rc)")")")
  return $rc
}
report() {
  echo "== wall time per phase"
  printf '  %s\n' "${times[@]}"
  printf '  %-8s %4ds\n' total "$SECONDS"
}
trap report EXIT
phase setup bash scripts/setup.sh
phase fmt cargo fmt --all -- --check
phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings
phase build cargo build --workspace --all-targets --locked
status=0
phase tests cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" || status=$?
phase fuzz bash scripts/fuzz.sh || status=$?
exit "$status"
