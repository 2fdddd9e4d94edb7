#!/usr/bin/env bash
# Merges N small squashfs extensions (plus one built from the trixie fixture's /usr/share, many
# files, colliding with nothing) onto a scratch root with `sysext merge --root` and with
# `systemd-sysext --root=... merge`, each merge+unmerge in its own mount namespace, and prints
# the wall time of each and the ratio (sysext / systemd-sysext: below 1 is better). `sysext`
# also computes its collision report; systemd-sysext has none.
#
#   bench/merge.sh                # N=20, 10 rounds, release build
#   N=50 ROUNDS=5 bench/merge.sh
#   SYSEXT=target/debug/sysext bench/merge.sh   # skip the release build
#
# Needs root, squashfs-tools, systemd-sysext; the fixture tar is optional (SYSEXT_FIXTURES,
# default ./fixtures).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fixtures=${SYSEXT_FIXTURES:-$root/fixtures}
n=${N:-20}
rounds=${ROUNDS:-10}
[[ $(id -u) == 0 ]] || { echo "bench: needs root (mount namespaces)" >&2; exit 2; }
command -v mksquashfs >/dev/null && command -v systemd-sysext >/dev/null ||
  { echo "bench: needs mksquashfs and systemd-sysext; run scripts/setup.sh" >&2; exit 2; }

if [[ -z ${SYSEXT:-} ]]; then
  (cd "$root" && cargo build --release --locked -q -p sysext)
  SYSEXT=${CARGO_TARGET_DIR:-$root/target}/release/sysext
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sysext-bench-merge.XXXXXX")
trap 'rm -rf "$work"' EXIT
r=$work/root
mkdir -p "$r/usr/bin" "$r/usr/lib" "$r/etc" "$r/opt" "$r/var/lib/extensions"
printf 'ID=debian\nVERSION_ID=12\n' >"$r/usr/lib/os-release"
cp "$r/usr/lib/os-release" "$r/etc/os-release"
for i in $(seq 1 "$n"); do
  t=$work/ext$i
  mkdir -p "$t/usr/lib/extension-release.d" "$t/usr/bin" "$t/opt/ext$i"
  echo 'ID=_any' >"$t/usr/lib/extension-release.d/extension-release.ext$i"
  echo "$i" >"$t/usr/bin/tool"        # every extension collides on /usr/bin/tool
  echo "$i" >"$t/usr/bin/tool$i"
  echo "$i" >"$t/opt/ext$i/data"
  mksquashfs "$t" "$r/var/lib/extensions/ext$i.raw" -all-root -noappend -no-progress -quiet
done
tarball=$fixtures/trixie-tar/rootfs.tar
if [[ -f $tarball ]]; then
  t=$work/big
  mkdir -p "$t/usr/lib/extension-release.d"
  tar -xf "$tarball" -C "$t" ./usr/share
  echo 'ID=_any' >"$t/usr/lib/extension-release.d/extension-release.big"
  mksquashfs "$t" "$r/var/lib/extensions/big.raw" -all-root -noappend -no-progress -quiet
fi
files=$(for f in "$r"/var/lib/extensions/*.raw; do unsquashfs -l "$f" | wc -l; done | paste -sd+ | bc)

run() { # $1: merge command; runs merge + unmerge $rounds times in a fresh namespace each
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 1 "$rounds"); do
    unshare -m --propagation private sh -c "mount --make-rshared / && mount -t tmpfs tmpfs /run && $1 >/dev/null 2>&1 && mountpoint -q '$r/usr'" ||
      { echo "bench: '$1' failed" >&2; exit 1; }
  done
  t1=$(date +%s.%N)
  echo "($t1 - $t0) / $rounds" | bc -l
}

ours=$(run "'$SYSEXT' merge --root '$r'")
theirs=$(run "systemd-sysext --root='$r' merge")
echo "$n small extensions$([[ -f $tarball ]] && echo ' + trixie /usr/share'), $files entries; $rounds rounds; $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %10s\n' tool seconds
printf '%-16s %10.3f\n' sysext "$ours" systemd-sysext "$theirs"
printf 'ratio sysext/systemd-sysext: %.2f\n' "$(echo "$ours / $theirs" | bc -l)"
