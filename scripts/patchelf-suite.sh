#!/usr/bin/env bash
# Runs patchelf's own test suite with its src/patchelf replaced by our flix-patchelf, the way
# the ELF issue measures compatibility (patchelf 0.19: 65 pass, 4 skip of 69).
#
# Usage: scripts/patchelf-suite.sh PATCHELF_SOURCE_DIR
#   PATCHELF_SOURCE_DIR: a checkout of patchelf's sources (NixOS/patchelf; not part of this
#   repository; it is copied, never modified). Needs autoconf, automake, g++ and make, which
#   scripts/setup.sh installs.
# Env: FLIX_PATCHELF (default: a release build, built here), JOBS (default 2).
set -euo pipefail
src=${1:?usage: scripts/patchelf-suite.sh PATCHELF_SOURCE_DIR}
[ -f "$src/src/patchelf.cc" ] || { echo "patchelf-suite: $src is not a patchelf source tree (no src/patchelf.cc)" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
for tool in autoconf automake g++ make; do
  command -v "$tool" >/dev/null || {
    echo "patchelf-suite: $tool is not installed; run 'bash scripts/setup.sh' first" >&2
    exit 2
  }
done
if [ -z "${FLIX_PATCHELF:-}" ]; then
  cargo build --quiet --release --locked -p flix --bin flix-patchelf --manifest-path "$here/Cargo.toml"
  FLIX_PATCHELF=$here/target/release/flix-patchelf
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$src" "$work/patchelf"
cd "$work/patchelf"
# Runs one build step with its output in the log; on failure prints the step and the log's
# tail (the log is deleted with the work folder on exit).
step() {
  local what=$1
  shift
  "$@" >>"$work/build.log" 2>&1 || {
    local rc=$?
    echo "patchelf-suite: $what failed (exit $rc); last lines of its log:" >&2
    tail -30 "$work/build.log" >&2
    exit 2
  }
}
# patchelf's own build first: the suite's test programs and fixtures come from it.
[ -x configure ] || step "patchelf's ./bootstrap.sh" ./bootstrap.sh
[ -f Makefile ] || step "patchelf's ./configure" ./configure
step "patchelf's make" make -j"${JOBS:-2}"
make -C tests -j"${JOBS:-2}" check >/dev/null 2>&1 || true   # builds the fixtures; reference run
echo "patchelf's own build:"
grep -E '^# (TOTAL|PASS|SKIP|FAIL|ERROR)' tests/test-suite.log | sed 's/^/  /'
cp "$FLIX_PATCHELF" src/patchelf
touch src/patchelf   # newer than the sources: make keeps it
status=0
make -C tests -j"${JOBS:-2}" check >/dev/null 2>&1 || status=$?
echo "flix-patchelf in its place:"
grep -E '^# (TOTAL|PASS|SKIP|FAIL|ERROR)' tests/test-suite.log | sed 's/^/  /'
grep -E '^(FAIL|ERROR): ' tests/test-suite.log | sed 's/^/  /' || true
exit "$status"
