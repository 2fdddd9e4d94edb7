#!/usr/bin/env bash
# Builds the ELF fuzz targets (crates/flix/fuzz: `rewrite` for flix's ELF editor, `scan` for
# the closure's ELF reader) with cargo-fuzz and runs each for FUZZ_SECONDS (default 30),
# seeded with real ELF files of this host. A panic or sanitizer report fails the script and
# leaves the crashing input under crates/flix/fuzz/artifacts/.
# Stable Rust is used with RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/../crates/flix/fuzz"
seconds=${FUZZ_SECONDS:-30}
export RUSTC_BOOTSTRAP=1
echo "== cargo fuzz build"
cargo fuzz build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seeds="$work/seeds"
mkdir "$seeds"
# Executables and libraries of both classes and several layouts: PIE, non-PIE, shared objects.
for f in /usr/bin/true /usr/bin/env /usr/lib/x86_64-linux-gnu/libz.so.1 \
         /usr/lib/x86_64-linux-gnu/libc.so.6 /bin/busybox \
         /usr/aarch64-linux-gnu/lib/libc.so.6 /usr/i686-linux-gnu/lib/libc.so.6; do
  if [ -f "$f" ]; then cp -L "$f" "$seeds/$(echo "$f" | tr / _)"; fi
done
for t in rewrite scan; do
  corpus="$work/corpus-$t"
  mkdir "$corpus"
  echo "== cargo fuzz run $t (${seconds}s)"
  status=0
  cargo fuzz run "$t" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=4194304 -print_final_stats=1 \
    >"$work/$t.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|Done )' "$work/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$work/$t.log" >&2
    echo "fuzz: $t failed (exit $status); the input is under crates/flix/fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
