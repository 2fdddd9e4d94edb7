#!/usr/bin/env bash
# Builds the cargo-fuzz targets of every fuzz folder (crates/*/fuzz) and runs each one, seeded
# with real inputs made on the fly. The folders share one CARGO_TARGET_DIR (default
# target/fuzz), so their common dependencies build once. A panic or sanitizer report fails the
# script and leaves the crashing input under <folder>/artifacts/<target>/.
#
#   rewrite, scan       crates/elf-edit/fuzz: the ELF editor (elf_edit) and the closure's ELF
#                       reader (elf_closure::scan); seeds: ELF files of this host.
#                       FUZZ_SECONDS each (default 30).
#   squashfs            crates/flix/fuzz, as the rest: sysext_core::inspect on arbitrary
#                       bytes; seed: a small image made by
#                       mksquashfs.
#   erofs               crates/flix/fuzz: sysext_core::inspect on arbitrary bytes with the EROFS
#                       magic (listing, reading files, the ELF scan); seeds: small images made
#                       by mkfs.erofs, uncompressed and lz4hc-compressed.
#   ddi                 crates/flix/fuzz: fsimage::dissect and sysext_core::inspect on
#                       arbitrary bytes with a GPT header's signature; seed: a DDI laid out
#                       with sfdisk around the EROFS seed.
#   tar_unpack          ocirootfs's layer unpacker into a temp root (nothing may appear beside
#                       it); seeds: tar, gzip and zstd layers with links, hardlinks, whiteouts.
#   oci_manifest        ocirootfs's index / manifest / config / manifest.json parsers; seeds:
#                       the JSON documents of an OCI layout made by umoci.
#   ldcache             the ld.so.cache parser; seed: /etc/ld.so.cache.
#   release             the os-release parser and extension-release writer; seeds:
#                       /etc/os-release and /usr/lib/os-release.
#   bake_manifest       the bake manifest parser; seed: examples/bake.toml.
# The last eight run FUZZ_NEW_SECONDS each (default 15). FUZZ_TARGETS="a b" runs only those.
# Stable Rust is used with RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo-fuzz passes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
folders=$(cd "$repo" && ls -d crates/*/fuzz)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/fuzz}
elf_seconds=${FUZZ_SECONDS:-30}
new_seconds=${FUZZ_NEW_SECONDS:-15}
targets=${FUZZ_TARGETS:-"rewrite scan squashfs erofs ddi tar_unpack oci_manifest ldcache release bake_manifest"}
export RUSTC_BOOTSTRAP=1
start=$(date +%s)
for f in $folders; do
  echo "== cargo fuzz build ($f)"
  (cd "$repo/$f" && cargo fuzz build)
done
echo "== built in $(( $(date +%s) - start ))s"

# The fuzz folder that has target $1.
folder_of() {
  for f in $folders; do
    if grep -qx "name = \"$1\"" "$repo/$f/Cargo.toml"; then echo "$f"; return; fi
  done
  echo "fuzz: no fuzz folder has a target named $1" >&2
  exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Seeds, one folder per target; a missing tool leaves its folder empty (libFuzzer then starts
# from nothing, which still runs).
seed() { mkdir -p "$work/seeds/$1"; echo "$work/seeds/$1"; }

# ELF files of both classes and several layouts: PIE, non-PIE, shared objects.
elf=$(seed rewrite)
for f in /usr/bin/true /usr/bin/env /usr/lib/x86_64-linux-gnu/libz.so.1 \
         /usr/lib/x86_64-linux-gnu/libc.so.6 /bin/busybox \
         /usr/aarch64-linux-gnu/lib/libc.so.6 /usr/i686-linux-gnu/lib/libc.so.6; do
  if [ -f "$f" ]; then cp -L "$f" "$elf/$(echo "$f" | tr / _)"; fi
done
cp -r "$elf" "$work/seeds/scan"

# A small tree: files, a symlink, a folder, an extension-release file.
tree="$work/tree"
mkdir -p "$tree/usr/bin" "$tree/usr/lib/extension-release.d" "$tree/usr/share/doc/x"
printf 'ID=_any\nSYSEXT_LEVEL=1\n' >"$tree/usr/lib/extension-release.d/extension-release.x"
printf '#!/bin/sh\necho hi\n' >"$tree/usr/bin/hi"
chmod 755 "$tree/usr/bin/hi"
ln -s hi "$tree/usr/bin/hello"
printf 'readme\n' >"$tree/usr/share/doc/x/README"
if [ -f /usr/bin/true ]; then cp /usr/bin/true "$tree/usr/bin/true"; fi

sq=$(seed squashfs)
if command -v mksquashfs >/dev/null; then
  mksquashfs "$tree" "$sq/x.raw" -all-root -noappend -quiet -comp gzip -b 4096 >/dev/null
  mksquashfs "$tree" "$sq/x-xz.raw" -all-root -noappend -quiet -comp xz >/dev/null 2>&1 || true
fi

er=$(seed erofs)
if command -v mkfs.erofs >/dev/null; then
  mkfs.erofs --quiet -T0 --all-root "$er/x.raw" "$tree" >/dev/null
  # Compressed with compact (the form our writer uses) and full indexes: reaches the index
  # walks and the LZ4 decoder.
  mkfs.erofs --quiet -T0 --all-root -zlz4hc "$er/x-lz4hc.raw" "$tree" >/dev/null
  mkfs.erofs --quiet -T0 --all-root -zlz4hc -Elegacy-compress "$er/x-full.raw" "$tree" >/dev/null
fi

dk=$(seed ddi)
if command -v sfdisk >/dev/null && [ -f "$er/x.raw" ]; then
  # root-x86-64 holding the EROFS seed, and an empty root-x86-64-verity.
  truncate -s 2M "$dk/x.raw"
  printf 'label: gpt\nstart=40, size=1024, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name="root-x86-64"\nsize=64, type=2c7357ed-ebd2-46d9-aec1-23d437ec2bf5, name="root-x86-64-verity"\n' |
    sfdisk --quiet "$dk/x.raw" >/dev/null
  dd if="$er/x.raw" of="$dk/x.raw" bs=512 seek=40 conv=notrunc status=none
fi

tu=$(seed tar_unpack)
tar -C "$tree" -cf "$tu/plain.tar" .
gzip -c "$tu/plain.tar" >"$tu/layer.tar.gz"
if command -v zstd >/dev/null; then zstd -q -c "$tu/plain.tar" >"$tu/layer.tar.zst"; fi
# Whiteouts, an opaque folder, a hardlink, a PAX header (long name) and a GNU sparse file.
mkdir -p "$work/wh/usr/share/doc/x" "$work/wh/opq"
: >"$work/wh/usr/share/doc/x/.wh.README"
: >"$work/wh/opq/.wh..wh..opq"
ln "$tree/usr/bin/hi" "$work/wh/hardlink" 2>/dev/null || cp "$tree/usr/bin/hi" "$work/wh/hardlink"
long="$work/wh/$(printf 'n%.0s' $(seq 1 150))"
printf 'long\n' >"$long"
truncate -s 64K "$work/wh/sparse"
printf 'end' >>"$work/wh/sparse"
tar -C "$work/wh" --format=pax --hard-dereference -cf "$tu/pax.tar" .
tar -C "$work/wh" --format=gnu --sparse -cf "$tu/gnu-sparse.tar" .

om=$(seed oci_manifest)
if command -v umoci >/dev/null; then
  layout="$work/layout"
  umoci init --layout "$layout" >/dev/null
  umoci new --image "$layout:latest" >/dev/null
  umoci insert --image "$layout:latest" "$tree/usr/bin/hi" /usr/bin/hi >/dev/null
  cp "$layout/index.json" "$om/index.json"
  for b in "$layout"/blobs/sha256/*; do
    # The JSON documents (manifest, config), not the layers.
    if head -c 1 "$b" | grep -q '{'; then cp "$b" "$om/$(basename "$b").json"; fi
  done
fi
printf '[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]' >"$om/manifest.json"

lc=$(seed ldcache)
if [ -f /etc/ld.so.cache ]; then cp /etc/ld.so.cache "$lc/"; fi

rel=$(seed release)
for f in /etc/os-release /usr/lib/os-release; do
  if [ -f "$f" ]; then cp -L "$f" "$rel/$(echo "$f" | tr / _)"; fi
done
cp "$tree/usr/lib/extension-release.d/extension-release.x" "$rel/"

bm=$(seed bake_manifest)
cp "$repo/examples/bake.toml" "$bm/"

for t in $targets; do
  case "$t" in
    rewrite | scan) seconds=$elf_seconds ;;
    *) seconds=$new_seconds ;;
  esac
  dir=$(folder_of "$t")
  corpus="$work/corpus-$t"
  mkdir "$corpus"
  echo "== cargo fuzz run $t in $dir (${seconds}s)"
  status=0
  (cd "$repo/$dir" && cargo fuzz run "$t" "$corpus" "$work/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=4194304 -print_final_stats=1) \
    >"$work/$t.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|Done )' "$work/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$work/$t.log" >&2
    echo "fuzz: $t failed (exit $status); the input is under $dir/artifacts/$t/" >&2
    exit 1
  fi
done
