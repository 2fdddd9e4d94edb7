#!/bin/sh
# Rewrite a few hundred host libraries (copies of /usr/lib/x86_64-linux-gnu/*.so*) with a long
# RUNPATH and DF_1_NODEFLIB: flix-patchelf in one process for all files vs Debian's patchelf
# with one process per file (the way shell tools call it). Same edit, fresh copies for each.
# Usage: bench/elf.sh [COUNT]   (FLIX_PATCHELF=path overrides the binary; default: release build)
set -eu
COUNT=${1:-300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${FLIX_PATCHELF:-}" ]; then
    cargo build --quiet --release -p flix --bin flix-patchelf --manifest-path "$ROOT/Cargo.toml"
    FLIX_PATCHELF="$ROOT/target/release/flix-patchelf"
fi
command -v patchelf >/dev/null || { echo "patchelf is needed (apt-get install patchelf)" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RPATH=/usr/local/a-long-extension-name-for-benchmarking/lib:/usr/local/a-long-extension-name-for-benchmarking/extralibs

# The sample: regular ELF shared objects, sorted, the loader excluded.
find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' ! -name 'ld-linux*' | sort | while read -r f; do
    [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = "177ELF" ] && echo "$f"
done | head -n "$COUNT" > "$WORK/list"
N=$(wc -l < "$WORK/list")
mkdir "$WORK/a" "$WORK/b"
xargs -a "$WORK/list" cp -t "$WORK/a"
xargs -a "$WORK/list" cp -t "$WORK/b"
BYTES=$(du -sb "$WORK/a" | cut -f1)
sync

now() { date +%s%N; }
t0=$(now)
(cd "$WORK/a" && "$FLIX_PATCHELF" --set-rpath "$RPATH" --no-default-lib -- *)
t1=$(now)
(cd "$WORK/b" && for f in *; do patchelf --set-rpath "$RPATH" --no-default-lib "$f"; done)
t2=$(now)

# Same result: both report the new RUNPATH everywhere.
bad=0
for f in "$WORK"/a/*; do
    [ "$("$FLIX_PATCHELF" --print-rpath "$f")" = "$RPATH" ] || bad=$((bad + 1))
done
flix_ms=$(( (t1 - t0) / 1000000 ))
pe_ms=$(( (t2 - t1) / 1000000 ))
echo "libraries: $N ($((BYTES / 1048576)) MiB), edit: --set-rpath (long) --no-default-lib"
echo "flix-patchelf, one process: ${flix_ms} ms"
echo "patchelf $(patchelf --version | cut -d' ' -f2), one process per file: ${pe_ms} ms"
awk -v a="$flix_ms" -v b="$pe_ms" 'BEGIN { if (a < 1) a = 1; printf "ratio patchelf/flix: %.1fx\n", b / a }'
[ "$bad" -eq 0 ] || { echo "$bad files without the new RUNPATH" >&2; exit 1; }
