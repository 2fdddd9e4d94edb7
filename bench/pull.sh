#!/bin/sh
# Times `ocirootfs IMAGE FOLDER` from a local docker-registry against the reference pipeline
# `skopeo copy docker://IMAGE oci:L:t && umoci raw unpack --image L:t FOLDER`, with a cold cache
# (ours: empty blob cache; reference: empty layout) and a warm one (blobs already there), and
# prints the ratios. Goal: cold at most 0.5, warm far below.
#
# Usage: bench/pull.sh [OCI_LAYOUT [TAG]]   (default: the trixie fixture, tag trixie)
# Env:   OCIROOTFS_BIN (default: a release build, built here), RUNS (default 3), SYSEXT_FIXTURES,
#        BENCH_DIR (where the scratch folder goes, default /var/tmp).
# Needs root (owners are applied by both tools), docker-registry, skopeo, umoci, hyperfine.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
. "$(dirname "$0")/registry.sh"
bench_layout bench/pull.sh "the ocirootfs tests" "$@"
runs=${RUNS:-3}
if [ -z "${OCIROOTFS_BIN:-}" ]; then
    (cd "$here" && cargo build --release --locked -p ocirootfs >&2)
    OCIROOTFS_BIN=$here/target/release/ocirootfs
fi
need_tools bench/pull.sh docker-registry skopeo umoci hyperfine python3
bench_work pull

serve_layout "$work" "$layout" "$tag"

# Every run unpacks into a new folder and nothing is deleted until the end. Deleting the last
# run's ~10,000 files right before the next one would measure ext4 instead of the tools: for
# about 30 s after a delete, ext4's inode allocator checks every recently freed inode
# (recently_deleted() in perf), which made creating files several times slower for both tools.
mkdir "$work/outs"
fresh="d=\$(mktemp -d -p $work/outs)"
ours="$fresh && $OCIROOTFS_BIN --cache $work/cache $image \$d/rootfs"
theirs="$fresh && skopeo copy --quiet --src-tls-verify=false docker://$image oci:$work/ref-layout:t && umoci raw unpack --image $work/ref-layout:t \$d/rootfs"

hyperfine --style basic --runs "$runs" --export-json "$work/cold.json" \
    -n "ocirootfs cold" --prepare "$work/aside $work/cache; sync" "$ours" \
    -n "skopeo+umoci cold" --prepare "$work/aside $work/ref-layout; sync" "$theirs" >&2
hyperfine --style basic --runs "$runs" --warmup 1 --export-json "$work/warm.json" \
    -n "ocirootfs warm" --prepare "sync" "$ours" \
    -n "skopeo+umoci warm" --prepare "sync" "$theirs" >&2

python3 - "$work/cold.json" "$work/warm.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))["results"]
    ours, ref = r[0]["median"], r[1]["median"]
    kind = "cold" if "cold" in r[0]["command"] else "warm"
    print(f"{kind}: ocirootfs {ours:.2f}s  skopeo+umoci {ref:.2f}s  ratio {ours / ref:.2f}")
PY
