#!/bin/sh
# Times the CI fan-out of `sysext bake` against one bake, on one machine with one blob cache:
#   single   sysext bake examples/bake.toml -o OUT
#   fan-out  sysext bake --plan, three shards (the plan's jobs dealt round-robin, one
#            `--only` per job) run one after another into their own folders, then
#            sysext bake --collect
# The example's image is served from a local docker-registry (the trixie fixture); its local
# inputs are prepared as its header says. The blob and rootfs caches are warmed once before
# timing, so both sides measure building, not the first download. Prints both medians and the
# ratio, of wall time and of CPU time. Goal: the fan-out's total within 1.2 of the single bake.
#
# Usage: bench/bake.sh [OCI_LAYOUT [TAG]]   (default: the trixie fixture, tag trixie)
# Env:   SYSEXT_BIN (default: a release build, built here), RUNS (default 3), SYSEXT_FIXTURES,
#        BENCH_DIR (where the scratch folder goes, default /var/tmp).
# Needs root (images are unpacked as root), docker-registry, skopeo, gcc,
# aarch64-linux-gnu-gcc, hyperfine, python3, and the arm64 fixture (the sysext tests build it).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
. "$(dirname "$0")/registry.sh"
bench_layout bench/bake.sh "the sysext tests" "$@"
runs=${RUNS:-3}
if [ -z "${SYSEXT_BIN:-}" ]; then
    (cd "$here" && cargo build --release --locked -p sysext --bin sysext >&2)
    SYSEXT_BIN=$here/target/release/sysext
fi
need_tools bench/bake.sh docker-registry skopeo gcc aarch64-linux-gnu-gcc hyperfine python3
arm64=${SYSEXT_FIXTURES:-/work/fixtures}/trixie-arm64-rootfs
[ -d "$arm64/usr" ] || { echo "bench/bake.sh: no arm64 fixture at $arm64 (run the sysext tests once)" >&2; exit 2; }
bench_work bake

serve_layout "$work" "$layout" "$tag"

# The example's inputs, as its header says.
in=$work/in
mkdir -p "$in/hello/bin"
sed "s#REGISTRY/debian:trixie#$image#" "$here/examples/bake.toml" >"$in/bake.toml"
printf '#include <stdio.h>\nint main(void){puts("hello");return 0;}\n' >"$in/hello.c"
printf '[Unit]\nDescription=hello\n[Service]\nType=oneshot\nExecStart=/usr/bin/hello\n[Install]\nWantedBy=multi-user.target\n' >"$in/hello/hello.service"
for goarch in amd64 arm64; do
    case $goarch in amd64) cc=gcc ;; arm64) cc=aarch64-linux-gnu-gcc ;; esac
    $cc -static -O2 -o "$in/hello/bin/hello" "$in/hello.c"
    tar -C "$in/hello" -czf "$in/hello-$goarch.tar.gz" bin hello.service
done
mkdir "$in/trixie-arm64"
cp -al "$arm64/usr" "$in/trixie-arm64/usr" 2>/dev/null || cp -a "$arm64/usr" "$in/trixie-arm64/usr"
ln -s usr/lib "$in/trixie-arm64/lib"

cache=$work/cache
bake="$SYSEXT_BIN bake $in/bake.toml --cache $cache"
# Warm the caches (blobs and the unpacked rootfs) once.
$bake -o "$work/warm" >/dev/null 2>&1

# The three shards: the plan's --only values dealt round-robin.
shards=$($bake --plan --json | python3 -c '
import json, sys
jobs = json.load(sys.stdin)
for i in range(3):
    print(" ".join("--only " + j["only"] for j in jobs[i::3]))
')
echo "shards:" >&2
echo "$shards" >&2
fanout="$bake --plan --json >/dev/null"
i=0
while IFS= read -r only; do
    [ -n "$only" ] || continue
    fanout="$fanout && $bake $only -o $work/shard$i >/dev/null"
    i=$((i + 1))
done <<EOF
$shards
EOF
parts=$(i=0; while [ $i -lt 3 ]; do printf ' %s' "$work/shard$i"; i=$((i + 1)); done)
fanout="$fanout && $SYSEXT_BIN bake --collect $work/release$parts >/dev/null"
single="$bake -o $work/single >/dev/null"

hyperfine --style basic --runs "$runs" --export-json "$work/bake.json" \
    -n "single bake" --prepare "rm -rf $work/single; sync" "$single" \
    -n "plan + 3 shards + collect" --prepare "rm -rf $work/shard0 $work/shard1 $work/shard2 $work/release; sync" "$fanout" >&2
cmp "$work/single/SHA256SUMS" "$work/release/SHA256SUMS" >&2 || { echo "bench/bake.sh: the fan-out's SHA256SUMS differs from the single bake's" >&2; exit 1; }

python3 - "$work/bake.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
single, fan = r[0]["median"], r[1]["median"]
cpu = [x["user"] + x["system"] for x in r]
print(f"wall: single bake {single:.2f}s  plan + 3 shards + collect {fan:.2f}s  ratio {fan / single:.2f} (goal: at most 1.2)")
# The shards run one after another, so jobs of different shards never overlap as they do in
# one bake; the CPU time says what the fan-out itself costs (plan, per-process start, collect).
print(f"cpu:  single bake {cpu[0]:.2f}s  plan + 3 shards + collect {cpu[1]:.2f}s  ratio {cpu[1] / cpu[0]:.2f}")
PY
