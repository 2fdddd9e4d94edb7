#!/usr/bin/env bash
# Packs one large tree (the trixie fixture's /usr, ~180 MB) with `sysext pack` (release build)
# and with `mksquashfs -all-root -noappend` at the same compressor, and prints wall time and
# output size of each plus the ratios (sysext / mksquashfs: below 1 is better). Then the same
# for EROFS (`--fs erofs --compression COMP:LEVEL`) against `mkfs.erofs -zCOMP,LEVEL -T0
# --all-root`.
#
#   bench/pack.sh                 # gzip zstd xz; erofs lz4hc:12 zstd:3
#   COMPRESSORS="zstd" EROFS_COMPRESSORS="lz4hc:9" bench/pack.sh
#   COMPRESSORS= bench/pack.sh    # EROFS only
#   THREADS=2 bench/pack.sh       # both tools on 2 threads (default: all CPUs)
#
# Needs the fixture tar (SYSEXT_FIXTURES, default ./fixtures; `cargo test -p testkit` or any
# test using testkit::fixtures::trixie_tar builds it), squashfs-tools and erofs-utils.
# MKFS_EROFS_OPTS adds options to mkfs.erofs only (e.g. the Flatcar bakery's
# "-Eztailpacking,fragments"; ours always packs tails).
# MKFS_EROFS names the reference mkfs.erofs (a command, words split); by default the host's,
# or, for a compressor the host's lacks (Debian 12's 1.5 has no zstd), trixie's 1.8 from the
# trixie-repart fixture when it is there, run through its own loader.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fixtures=${SYSEXT_FIXTURES:-$root/fixtures}
tarball=$fixtures/trixie-tar/rootfs.tar
[[ -f $tarball ]] || { echo "bench: $tarball missing; build the fixtures first (see header)" >&2; exit 2; }
command -v mksquashfs >/dev/null || { echo "bench: mksquashfs missing; run scripts/setup.sh" >&2; exit 2; }

threads=${THREADS:-$(nproc)}
work=$(mktemp -d "${TMPDIR:-/tmp}/sysext-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd "$root" && cargo build --release --locked -q -p sysext)
bin=${CARGO_TARGET_DIR:-$root/target}/release/sysext

tree=$work/tree
mkdir -p "$tree"
tar -xf "$tarball" -C "$tree" ./usr
mkdir -p "$tree/usr/lib/extension-release.d"
echo 'ID=_any' >"$tree/usr/lib/extension-release.d/extension-release.bench"
files=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)

now() { date +%s.%N; }
echo "tree: $files files, $bytes bytes; $threads threads; $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n ${COMPRESSORS-gzip zstd xz} ]]; then
  printf '%-5s %10s %10s %7s %12s %12s %7s\n' comp sysext_s mksq_s time_x sysext_bytes mksq_bytes size_x
fi
for comp in ${COMPRESSORS-gzip zstd xz}; do
  sync
  t0=$(now)
  "$bin" pack "$tree" "$work/bench.raw" --compression "$comp" --threads "$threads" --force >/dev/null
  t1=$(now)
  mksquashfs "$tree" "$work/mk.raw" -all-root -noappend -comp "$comp" -processors "$threads" -quiet -no-progress >/dev/null
  t2=$(now)
  s_ours=$(stat -c %s "$work/bench.raw")
  s_mk=$(stat -c %s "$work/mk.raw")
  # Same content listed by the reference reader (names, modes, owners, file sizes; not the
  # dates, which mksquashfs takes from the tree, nor directory listing sizes).
  list() { unsquashfs -lln "$1" | awk '{ if ($1 ~ /^d/) $3 = ""; $4 = ""; $5 = ""; print }'; }
  if ! diff <(list "$work/bench.raw") <(list "$work/mk.raw") >/dev/null; then
    echo "bench: $comp images list differently" >&2
  fi
  awk -v c="$comp" -v a="$t0" -v b="$t1" -v m="$t2" -v so="$s_ours" -v sm="$s_mk" 'BEGIN {
    o = b - a; k = m - b;
    printf "%-5s %10.2f %10.2f %7.2f %12d %12d %7.4f\n", c, o, k, o / k, so, sm, so / sm }'
  rm -f "$work/bench.raw" "$work/mk.raw"
done

# EROFS. mkfs.erofs 1.5 compresses on one thread; 1.8 takes --workers.
trixie=$fixtures/trixie-systemd
mkfs_for() {
  if [[ -n ${MKFS_EROFS:-} ]]; then echo "$MKFS_EROFS"; return; fi
  if mkfs.erofs --help 2>&1 | grep -qi "compressors[a-z ]*:.*\b$1\b"; then echo mkfs.erofs; return; fi
  if [[ -x $trixie/usr/bin/mkfs.erofs ]]; then
    echo "$trixie/lib64/ld-linux-x86-64.so.2 --library-path $trixie/usr/lib/x86_64-linux-gnu $trixie/usr/bin/mkfs.erofs"
  fi
}
printf '%-8s %10s %10s %7s %12s %12s %7s  %s\n' erofs sysext_s mkfs_s time_x sysext_bytes mkfs_bytes size_x mkfs.erofs
for spec in ${EROFS_COMPRESSORS-lz4hc:12 zstd:3}; do
  comp=${spec%%:*}
  level=${spec#*:}
  mkfs=$(mkfs_for "$comp")
  if [[ -z $mkfs ]]; then echo "bench: no mkfs.erofs with $comp here; skipped" >&2; continue; fi
  workers=()
  if $mkfs --help 2>&1 | grep -q -- --workers; then workers=(--workers="$threads"); fi
  sync
  t0=$(now)
  "$bin" pack "$tree" "$work/bench.raw" --fs erofs --compression "$spec" --threads "$threads" --force >/dev/null
  t1=$(now)
  # shellcheck disable=SC2086
  $mkfs --quiet -T0 --all-root -U00000000-0000-0000-0000-000000000000 "${workers[@]}" ${MKFS_EROFS_OPTS:-} \
    -z"$comp,$level" "$work/mk.raw" "$tree" >/dev/null
  t2=$(now)
  s_ours=$(stat -c %s "$work/bench.raw")
  s_mk=$(stat -c %s "$work/mk.raw")
  version=$($mkfs --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1 || true)
  awk -v c="$spec" -v a="$t0" -v b="$t1" -v m="$t2" -v so="$s_ours" -v sm="$s_mk" -v v="${version:-?}" 'BEGIN {
    o = b - a; k = m - b;
    printf "%-8s %10.2f %10.2f %7.2f %12d %12d %7.4f  %s\n", c, o, k, o / k, so, sm, so / sm, v }'
  rm -f "$work/bench.raw" "$work/mk.raw"
done
# What dm-verity adds (VERITY=0 skips it): EROFS without and with --verity, and --format ddi,
# against cryptsetup's `veritysetup format` over the same image (the reference hash tree).
if [[ ${VERITY:-1} != 0 ]] && command -v veritysetup >/dev/null; then
  printf '\n%-12s %10s %10s %10s %12s %9s\n' verity plain_s verity_s added_s veritysetup_s added_x
  sync
  t0=$(now)
  "$bin" pack "$tree" "$work/e.raw" --name bench --fs erofs --threads "$threads" --force >/dev/null
  t1=$(now)
  "$bin" pack "$tree" "$work/v.raw" --name bench --fs erofs --verity --threads "$threads" --force >/dev/null
  t2=$(now)
  "$bin" pack "$tree" "$work/d.raw" --name bench --fs erofs --format ddi --threads "$threads" --force >/dev/null
  t3=$(now)
  veritysetup format "$work/e.raw" "$work/e.verity" >/dev/null
  t4=$(now)
  s_img=$(stat -c %s "$work/e.raw")
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" -v s="$s_img" 'BEGIN {
    plain = b - a; ver = c - b; ddi = d - c; vs = e - d;
    printf "%-12s %10.2f %10.2f %10.2f %12.2f %9.2f\n", "--verity", plain, ver, ver - plain, vs, (ver - plain) / vs;
    printf "%-12s %10.2f %10.2f %10.2f %12.2f %9.2f\n", "--format ddi", plain, ddi, ddi - plain, vs, (ddi - plain) / vs;
    printf "image %d bytes; veritysetup format hashes %.0f MB/s\n", s, s / vs / 1e6 }'
  rm -f "$work"/e.raw "$work"/e.verity "$work"/v.raw "$work"/v.verity "$work"/v.roothash "$work"/d.raw
fi
