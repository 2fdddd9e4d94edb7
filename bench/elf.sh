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
mkdir "$WORK/a" "$WORK/b" "$WORK/c"
xargs -a "$WORK/list" cp -t "$WORK/a"
xargs -a "$WORK/list" cp -t "$WORK/b"
xargs -a "$WORK/list" cp -t "$WORK/c"
BYTES=$(du -sb "$WORK/a" | cut -f1)
sync

# Wall time and CPU time (user+sys of the process tree), via GNU time when present: the
# machine may be shared, and CPU time is the fairer figure then.
measure() { # OUTFILE DIR COMMAND...
    out=$1 dir=$2
    shift 2
    if [ -x /usr/bin/time ]; then
        (cd "$dir" && /usr/bin/time -f "%e %U %S" -o "$out" sh -c "$*")
    else
        s=$(date +%s%N)
        (cd "$dir" && sh -c "$*")
        e=$(date +%s%N)
        echo "$(( (e - s) / 1000000 ))e-3 0 0" > "$out"
    fi
}
measure "$WORK/t.flix" "$WORK/a" "\"$FLIX_PATCHELF\" --set-rpath '$RPATH' --no-default-lib -- *"
measure "$WORK/t.pe" "$WORK/b" "for f in *; do patchelf --set-rpath '$RPATH' --no-default-lib \"\$f\"; done"
# The floor of any tool that rewrites whole files safely: read each file, write it under a new
# name, rename it over the old one; no ELF work, one process per CPU.
CPUS=$(nproc)
cat >"$WORK/floor.py" <<'PY'
import os, sys
for p in sys.argv[1:]:
    data = open(p, "rb").read()
    fd = os.open(p + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    os.write(fd, data)
    os.close(fd)
    os.rename(p + ".tmp", p)
PY
measure "$WORK/t.floor" "$WORK/c" "ls | xargs -P $CPUS -n $(( (N + CPUS - 1) / CPUS )) python3 '$WORK/floor.py'"

# Same result: both report the new RUNPATH everywhere.
bad=0
for f in "$WORK"/a/*; do
    [ "$("$FLIX_PATCHELF" --print-rpath "$f")" = "$RPATH" ] || bad=$((bad + 1))
done
read -r fw fu fs < "$WORK/t.flix"
read -r pw pu ps < "$WORK/t.pe"
read -r lw lu ls < "$WORK/t.floor"
echo "libraries: $N ($((BYTES / 1048576)) MiB), edit: --set-rpath (long) --no-default-lib"
awk -v fw="$fw" -v fu="$fu" -v fs="$fs" -v pw="$pw" -v pu="$pu" -v ps="$ps" -v lw="$lw" -v v="$(patchelf --version | cut -d' ' -f2)" 'BEGIN {
    fc = fu + fs; pc = pu + ps
    printf "flix-patchelf, one process:          wall %.2f s, cpu %.2f s\n", fw, fc
    printf "patchelf %s, one process per file: wall %.2f s, cpu %.2f s\n", v, pw, pc
    printf "ratio patchelf/flix: wall %.1fx, cpu %.1fx\n", pw / (fw > 0 ? fw : 0.01), pc / (fc > 0 ? fc : 0.01)
    printf "floor (read, write under a new name, rename; no ELF work): wall %.2f s; patchelf/floor %.1fx, flix/floor %.2f\n", lw, pw / (lw > 0 ? lw : 0.01), fw / (lw > 0 ? lw : 0.01)
}'
[ "$bad" -eq 0 ] || { echo "$bad files without the new RUNPATH" >&2; exit 1; }
