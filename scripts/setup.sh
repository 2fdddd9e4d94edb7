#!/usr/bin/env bash
# Installs everything the build, the tests, the benchmarks and the demo need on a fresh
# Debian 12 machine: Debian packages through apt-get, Rust tools through cargo.
# Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  mmdebstrap          # real root filesystems for the tests and the demo
  docker-registry     # a real registry server on loopback
  skopeo umoci        # reference tools: push, pull, unpack
  squashfs-tools      # mksquashfs / unsquashfs: the reference packer and reader
  erofs-utils
  bubblewrap          # flatwrap's unprivileged path
  busybox-static      # a host with no libc at all
  g++                 # libFuzzer (cargo-fuzz) is C++
  musl-tools          # musl-gcc for musl-linked test programs
  patchelf            # reference only (benchmarks, differential tests)
  hyperfine
  tmux                # drives htop in a terminal
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross  # arm64 objects for the ELF tests
  gcc-i686-linux-gnu libc6-dev-i386-cross      # i386 objects for the ELF tests
  lld golang-go       # binaries from other linkers (full .dynamic, Go layout) for the ELF tests
  util-linux mount e2fsprogs attr file binutils
  ca-certificates
  apache2-utils openssl  # htpasswd -B and token-signing keys for the registry auth tests
)

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
# cargo-fuzz builds the ELF fuzz targets (scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
