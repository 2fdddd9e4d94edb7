#!/usr/bin/env bash
# The project's test command (README.md): installs what is missing, then checks formatting,
# lints and runs every test, unit and end-to-end, against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets --locked
echo "== cargo test"
status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" || status=$?
echo "== fuzz (ELF reader and rewriter)"
bash scripts/fuzz.sh || status=$?
exit "$status"
