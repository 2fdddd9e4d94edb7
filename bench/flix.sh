#!/bin/sh
# Times the whole job `flix IMAGE tools PATHS...` from a local docker-registry (pull, unpack,
# relocate, pack) against the reference pipeline: `skopeo copy` + `umoci raw unpack` + a
# patchelf-based relocation script written for this benchmark (closure from the rootfs's own
# ldd run in a chroot, libraries flat in usr/local/NAME, PT_INTERP and RUNPATH set with
# patchelf, also on ELF files inside resource folders) + `mksquashfs -all-root`, both cold
# (empty blob cache / empty layout; earlier runs set aside, not deleted, see registry.sh).
# Prints the medians, the ratio, flix's phases, each side's peak RSS and image size (the
# reference ships a different tree). Goal (#14): ratio at most 0.1; flix's memory bounded by
# the closure, not the image size.
#
# Usage: bench/flix.sh [OCI_LAYOUT [TAG]]   (default: the trixie fixture, tag trixie)
# Env:   FLIX_BIN (default: a release build, built here), RUNS (default 3), SYSEXT_FIXTURES,
#        BENCH_DIR (default /var/tmp, a disk; /dev/shm measures without the file system).
# Needs root, docker-registry, skopeo, umoci, patchelf, mksquashfs, hyperfine, python3.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
. "$(dirname "$0")/registry.sh"
bench_layout bench/flix.sh "the flix e2e tests" "$@"
runs=${RUNS:-3}
paths="/usr/bin/htop /usr/sbin/nginx /usr/bin/b3sum /usr/bin/curl /usr/share/terminfo /usr/bin/python3 /usr/lib/python3.13"
if [ -z "${FLIX_BIN:-}" ]; then
    (cd "$here" && cargo build --release --locked -p flix --bin flix >&2)
    FLIX_BIN=$here/target/release/flix
fi
need_tools bench/flix.sh docker-registry skopeo umoci patchelf mksquashfs hyperfine python3
bench_work flix

# The reference relocation, as a user of patchelf would write it.
cat >"$work/reloc.sh" <<'SH'
#!/bin/sh
# reloc.sh ROOTFS NAME TREE PATH...
set -eu
root=$1 name=$2 tree=$3; shift 3
lib=/usr/local/$name
mkdir -p "$tree$lib"
elfs=
for p in "$@"; do
    t=$(echo "$p" | sed 's#^/usr/sbin/#/usr/bin/#')
    mkdir -p "$tree$(dirname "$t")"
    cp -a "$root$p" "$tree$t"
    if [ -L "$root$p" ]; then
        real=$(readlink "$root$p"); case $real in /*) ;; *) real=$(dirname "$p")/$real ;; esac
        cp -a "$root$real" "$tree$real"; elfs="$elfs $real"
    elif [ -d "$root$p" ]; then
        for f in $(find "$root$p" -type f -name '*.so*'); do elfs="$elfs ${f#$root}"; done
    else
        elfs="$elfs $p"
    fi
done
loader=
for e in $elfs; do
    chroot "$root" /usr/bin/ldd "$e" 2>/dev/null || true
done | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u >"$tree.libs"
while read -r l; do
    cp -L "$root$l" "$tree$lib/$(basename "$l")"
    case $l in *ld-linux*) loader=$lib/$(basename "$l") ;; esac
done <"$tree.libs"
for f in $(find "$tree" -type f); do
    head -c4 "$f" | grep -q ELF || continue
    case $f in *ld-linux*) continue ;; esac
    if patchelf --print-interpreter "$f" >/dev/null 2>&1; then
        patchelf --set-interpreter "$loader" "$f"
    fi
    patchelf --set-rpath "$lib" --no-default-lib "$f" 2>/dev/null || true
done
mkdir -p "$tree/usr/lib/extension-release.d"
printf 'ID=_any\nARCHITECTURE=x86-64\n' >"$tree/usr/lib/extension-release.d/extension-release.$name"
SH
chmod +x "$work/reloc.sh"

serve_layout "$work" "$layout" "$tag"

ours="cd $work && XDG_CACHE_HOME=$work/cache $FLIX_BIN --force $image tools $paths 2>/dev/null"
theirs="cd $work && skopeo copy --quiet --src-tls-verify=false docker://$image oci:$work/ref-layout:t && umoci raw unpack --image $work/ref-layout:t $work/ref-root && $work/reloc.sh $work/ref-root tools $work/ref-tree $paths && mksquashfs $work/ref-tree $work/ref.raw -all-root -noappend -quiet -no-progress"

hyperfine --style basic --runs "$runs" --export-json "$work/cold.json" \
    -n "flix cold" --prepare "$work/aside $work/cache $work/tools.raw; sync" "$ours" \
    -n "reference cold" --prepare "$work/aside $work/ref-layout $work/ref-root $work/ref-tree $work/ref.raw; sync" "$theirs" >&2

ref_size=$(stat -c %s "$work/ref.raw")
rss() { /usr/bin/time -f %M sh -c "$1" 2>&1 >/dev/null | tail -1; }
# Where flix's time goes (its --json report): getting the rootfs, planning, staging and packing.
"$work/aside" "$work/cache" "$work/tools.raw"
(cd "$work" && XDG_CACHE_HOME=$work/cache $FLIX_BIN --force --json $image tools $paths 2>/dev/null) >"$work/phases.json"
python3 - "$work/phases.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["seconds"]
print("flix phases: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}s" for k, v in s.items()))
PY
"$work/aside" "$work/cache" "$work/tools.raw"
ours_rss=$(rss "$ours")
ours_size=$(stat -c %s "$work/tools.raw")
"$work/aside" "$work/ref-layout" "$work/ref-root" "$work/ref-tree" "$work/ref.raw"
ref_size_rootfs=$(du -sb "$layout" | cut -f1)

python3 - "$work/cold.json" "$ours_rss" "$ours_size" "$ref_size_rootfs" "$ref_size" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
ours, ref = r[0]["median"], r[1]["median"]
print(f"cold: flix {ours:.2f}s  reference (skopeo+umoci+patchelf+mksquashfs) {ref:.2f}s  ratio {ours / ref:.2f}")
print(f"flix peak RSS {int(sys.argv[2]) / 1024:.0f} MiB; image layout {int(sys.argv[4]) / 2**20:.0f} MiB; "
      f"tools.raw {int(sys.argv[3]) / 1e6:.2f} MB, the reference's {int(sys.argv[5]) / 1e6:.2f} MB")
PY
