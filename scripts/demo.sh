#!/usr/bin/env bash
# The main job, end to end on a fresh machine:
#   1. install what the demo needs (scripts/setup.sh demo) and build the tools (release);
#   2. build a real Debian trixie root filesystem with mmdebstrap and turn it into an OCI image;
#   3. serve it from a docker-registry on 127.0.0.1 and push it there with skopeo;
#   4. flix: relocate htop, nginx, b3sum and curl into tools.raw, pulled from the registry;
#   5. flatwrap: wrap python3 with its whole rootfs into python.raw;
#   6. check both images and try them on this host with `sysext run` (a private mount
#      namespace: the host's /usr is never touched), printing what ran.
# Everything is written under ./out (or $DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
out=${DEMO_DIR:-$top/out/demo}
mkdir -p "$out"

step() { printf '\n== %s\n' "$*"; }

step "setup"
bash scripts/setup.sh demo
cargo build --release --locked -p sysext -p flix -p flatwrap -p ocirootfs
bin=$top/target/release

step "a Debian trixie root filesystem (mmdebstrap)"
if [ ! -f "$out/trixie.tar" ]; then
  mmdebstrap --quiet --variant=apt --include=htop,nginx-light,b3sum,curl,python3 trixie "$out/trixie.partial.tar"
  mv "$out/trixie.partial.tar" "$out/trixie.tar"
fi
if [ ! -d "$out/oci" ]; then
  rm -rf "$out/rootfs" "$out/oci.tmp"
  mkdir -p "$out/rootfs"
  tar --numeric-owner -xpf "$out/trixie.tar" -C "$out/rootfs"
  umoci init --layout "$out/oci.tmp"
  umoci new --image "$out/oci.tmp:trixie"
  umoci insert --image "$out/oci.tmp:trixie" "$out/rootfs" /
  mv "$out/oci.tmp" "$out/oci"
fi

step "a registry on 127.0.0.1"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$out/registry"
cat > "$out/registry/config.yml" <<CFG
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $out/registry/data
http:
  addr: 127.0.0.1:$port
CFG
docker-registry serve "$out/registry/config.yml" >/dev/null 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
image=127.0.0.1:$port/debian:trixie
skopeo copy --quiet --dest-tls-verify=false "oci:$out/oci:trixie" "docker://$image"
echo "serving $image"

step "flix: tools.raw from $image"
time "$bin/flix" --force --output "$out/tools.raw" "$image" tools \
  /usr/bin/htop /usr/sbin/nginx /usr/bin/b3sum /usr/bin/curl /usr/share/terminfo
"$bin/sysext" inspect "$out/tools.raw" | head -n 20
# check exits 1 here: tools.raw ships usr/bin/curl, which hides this host's own curl while
# merged (a warning the user should see); anything else would be a failure of the demo.
rc=0; "$bin/sysext" check "$out/tools.raw" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"

step "flatwrap: python.raw from $image"
time "$bin/flatwrap" --force --output "$out/python.raw" "$image" python /usr/bin/python3
# The same for python.raw's launcher usr/bin/python3 on a host with python3.
rc=0; "$bin/sysext" check "$out/python.raw" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"

step "without relocation the trixie binaries do not run here"
"$out/rootfs/usr/bin/htop" --version 2>&1 | head -n 2 || true

step "trying the images on this host (private mount namespace)"
echo "hello from the demo" > "$out/hello.txt"
"$bin/sysext" run "$out/tools.raw" -- /usr/bin/b3sum "$out/hello.txt"
"$bin/sysext" run "$out/tools.raw" -- /usr/bin/curl -s "file://$out/hello.txt"
"$bin/sysext" run "$out/tools.raw" -- /usr/bin/nginx -v   # flix ships usr/sbin programs in usr/bin
"$bin/sysext" run "$out/tools.raw" -- /usr/bin/htop --version
"$bin/sysext" run "$out/python.raw" -- /usr/bin/python3 -c 'import sys, json; print("python", sys.version.split()[0], json.dumps({"ok": True}))'

step "bake: examples/bake.toml (flix, flatwrap and static extensions, x86-64 and arm64)"
bake=$out/bake-inputs
mkdir -p "$bake/hello/bin"
sed "s/REGISTRY/127.0.0.1:$port/" examples/bake.toml > "$bake/bake.toml"
printf '#include <stdio.h>\nint main(void){puts("hello from a static extension");return 0;}\n' > "$bake/hello.c"
printf '[Unit]\nDescription=Say hello\n[Service]\nType=oneshot\nExecStart=/usr/bin/hello\n[Install]\nWantedBy=multi-user.target\n' > "$bake/hello/hello.service"
for goarch in amd64 arm64; do
  case $goarch in amd64) cc=gcc ;; arm64) cc=aarch64-linux-gnu-gcc ;; esac
  $cc -static -O2 -o "$bake/hello/bin/hello" "$bake/hello.c"
  tar -C "$bake/hello" -czf "$bake/hello-$goarch.tar.gz" bin hello.service
done
if [ ! -d "$bake/trixie-arm64" ]; then
  rm -rf "$bake/trixie-arm64.tar" "$bake/trixie-arm64.tmp"
  mmdebstrap --quiet --variant=extract --arch=arm64 --include=libc6,b3sum trixie "$bake/trixie-arm64.tar"
  mkdir -p "$bake/trixie-arm64.tmp"
  tar --numeric-owner -xpf "$bake/trixie-arm64.tar" -C "$bake/trixie-arm64.tmp"
  [ -e "$bake/trixie-arm64.tmp/lib" ] || ln -s usr/lib "$bake/trixie-arm64.tmp/lib"
  mv "$bake/trixie-arm64.tmp" "$bake/trixie-arm64"
fi
time "$bin/sysext" bake "$bake/bake.toml" --out "$out/bake" --base-url "http://127.0.0.1:8080/extensions"
(cd "$out/bake" && sha256sum -c SHA256SUMS)
echo "again, with nothing changed:"
time "$bin/sysext" bake "$bake/bake.toml" --out "$out/bake" --base-url "http://127.0.0.1:8080/extensions"
ls -l "$out/bake"

echo
echo "demo done: images in $out"
