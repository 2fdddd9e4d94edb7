#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine: Debian packages through
# apt-get, Rust tools through cargo. Safe to run again: it installs only what is missing.
#
# Usage: scripts/setup.sh [demo]
#   (no argument)  everything: the build, the tests, the fuzz targets, the benchmarks and
#                  scripts/patchelf-suite.sh
#   demo           only what scripts/demo.sh uses (no test-only tools, no cargo-fuzz)
set -euo pipefail
profile=${1:-all}
case "$profile" in
  all|demo) ;;
  *) echo "setup: unknown profile '$profile' (use no argument, or 'demo')" >&2; exit 2 ;;
esac

# What the main job (scripts/demo.sh) needs.
demo_packages=(
  mmdebstrap          # real root filesystems for the tests and the demo
  docker-registry     # a real registry server on loopback
  skopeo umoci        # reference tools: push, pull, unpack
  squashfs-tools      # mksquashfs / unsquashfs: the reference packer and reader
  util-linux mount    # unshare, loop devices
  gcc                 # the linker Rust needs; the demo's static hello for bake
  libssl-dev pkg-config  # rust-openssl (fsimage signs and checks root hash signatures)
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross  # the demo's arm64 hello, and arm64 ELF tests
  python3             # a free loopback port for the demo's registry
  ca-certificates
)

# Everything else the tests, the fuzz targets and the benchmarks use.
packages=(
  "${demo_packages[@]}"
  erofs-utils
  bubblewrap          # flatwrap's unprivileged path
  busybox-static      # a host with no libc at all
  g++                 # libFuzzer (cargo-fuzz) is C++
  autoconf automake make  # scripts/patchelf-suite.sh builds patchelf's own suite
  musl-tools          # musl-gcc for musl-linked test programs
  patchelf            # reference only (benchmarks, differential tests)
  hyperfine
  tmux                # drives htop in a terminal
  gcc-i686-linux-gnu libc6-dev-i386-cross      # i386 objects for the ELF tests
  lld golang-go       # binaries from other linkers (full .dynamic, Go layout) for the ELF tests
  e2fsprogs attr libcap2-bin file binutils
  apache2-utils openssl  # htpasswd -B and token-signing keys for the registry auth tests
  python3-venv python3-dev  # auditwheel (from PyPI) repairs a wheel with flix-patchelf
  qemu-user-static    # relocated arm64 and i386 programs run in a root without libc
  cryptsetup-bin fdisk  # veritysetup verify checks our hash trees; sfdisk --json reads our DDIs
  softhsm2 libengine-pkcs11-openssl p11-kit-modules  # a PKCS#11 token signs root hashes (--key pkcs11:…)
  strace              # which gconv module the host's and the relocated iconv open (flix_glibc_data)
  gpg gpg-agent gpgv  # bake --signing-key signs SHA256SUMS (the tests make their keys)
  btrfs-progs dosfstools bzip2  # install-image tests build a Flatcar-layout disk (OEM btrfs, EFI vfat)
  curl                # a second client of the registry (sysext push/pull tests read the distribution API)
)
[ "$profile" = demo ] && packages=("${demo_packages[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The registry package ships a service; the tests start their own on loopback.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 2; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
[ "$profile" = demo ] && exit 0
# cargo-fuzz builds the fuzz targets (scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
