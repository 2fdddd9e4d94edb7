#!/usr/bin/env bash
# Runs patchelf's own test suite with its src/patchelf replaced by our flix-patchelf, the way
# the ELF issue measures compatibility (patchelf 0.19: 65 pass, 4 skip of 69).
#
# Usage: scripts/patchelf-suite.sh PATCHELF_SOURCE_DIR
#   PATCHELF_SOURCE_DIR: a checkout of https://github.com/NixOS/patchelf (not part of this
#   repository; it is copied, never modified). Needs autoconf, automake, g++ and make.
# Env: FLIX_PATCHELF (default: a release build, built here), JOBS (default 2).
set -euo pipefail
src=${1:?usage: scripts/patchelf-suite.sh PATCHELF_SOURCE_DIR}
[ -f "$src/src/patchelf.cc" ] || { echo "patchelf-suite: $src is not a patchelf source tree" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${FLIX_PATCHELF:-}" ]; then
  cargo build --quiet --release --locked -p flix --bin flix-patchelf --manifest-path "$here/Cargo.toml"
  FLIX_PATCHELF=$here/target/release/flix-patchelf
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$src" "$work/patchelf"
cd "$work/patchelf"
# patchelf's own build first: the suite's test programs and fixtures come from it.
[ -x configure ] || ./bootstrap.sh >"$work/build.log" 2>&1
[ -f Makefile ] || ./configure >>"$work/build.log" 2>&1
make -j"${JOBS:-2}" >>"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 2; }
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
