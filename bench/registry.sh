# Sourced by the benchmarks: their scratch folder and tool check, and an OCI layout served from
# a docker-registry on 127.0.0.1.

# need_tools SCRIPT TOOL...: exits 2 naming the first TOOL that is not installed.
need_tools() {
    local script=$1 t
    shift
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "$script: $t is missing (scripts/setup.sh installs it)" >&2; exit 2; }
    done
}

# bench_layout SCRIPT TESTS [LAYOUT [TAG]]: sets layout (default: the trixie fixture's OCI layout
# under $SYSEXT_FIXTURES) and tag (default trixie); exits 2 when LAYOUT is no OCI layout, naming
# TESTS as what builds the fixture.
bench_layout() {
    local script=$1 tests=$2
    layout=${3:-${SYSEXT_FIXTURES:-/work/fixtures}/trixie-oci/layout}
    tag=${4:-trixie}
    [ -f "$layout/index.json" ] || {
        echo "$script: no OCI layout at $layout (run $tests once to build the trixie fixture, or pass one)" >&2
        exit 2
    }
}

# bench_work NAME: sets work (a new scratch folder $BENCH_DIR/bench-NAME.*, default /var/tmp:
# a disk, as users unpack to; a tmpfs there measures the tools without the file system) and
# reg_pid (empty); on exit the registry serve_layout started is stopped and work is removed.
#
# "$work/aside PATH..." moves PATHs into $work/trash instead of deleting them, for the cold
# runs' --prepare: on ext4 without a journal (as on these machines), every inode created within
# 5-35 s of a mass delete in its group first scans the recently deleted ones
# (ext4's recently_deleted), so an `rm -rf` of one run's 10,000 files made the next run's
# unpack 3-5x slower for both tools alike: that measured the deletes, not the tools. The trash
# goes with $work at the end.
bench_work() {
    work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-$1.XXXXXX")
    reg_pid=
    trap bench_cleanup EXIT INT TERM
    cat >"$work/aside" <<SH
#!/bin/sh
t=$work/trash/\$(date +%s%N)
mkdir -p "\$t"
for p in "\$@"; do if [ -e "\$p" ]; then mv "\$p" "\$t/"; fi; done
SH
    chmod +x "$work/aside"
}
bench_cleanup() {
    [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
    rm -rf "$work"
}

# serve_layout WORK LAYOUT TAG: starts the registry with its storage under WORK, pushes
# LAYOUT:TAG as bench:TAG; sets reg_pid (stop it on exit) and image (the pushed reference).
serve_layout() {
    local work=$1 layout=$2 tag=$3 port i
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
    docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
    reg_pid=$!
    i=0
    until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "registry did not start" >&2; exit 2; }; sleep 0.1
    done
    image=127.0.0.1:$port/bench:$tag
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$tag" "docker://$image"
}
