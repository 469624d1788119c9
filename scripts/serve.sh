#!/usr/bin/env bash
# Setup and run: installs what is missing, builds berth (release) and starts
# a registry on 127.0.0.1:5000 with its data in ./berth-data. No config file.
# Extra arguments go to `berth serve` (e.g. --listen 0.0.0.0:5000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    echo "berth: cargo not found; install the Rust toolchain (https://rustup.rs) and retry" >&2
    exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
# The same target dir and selection as the tests and benchmarks: one RocksDB
# build per profile serves them all.
cargo build --release --workspace --all-targets
exec "$CARGO_TARGET_DIR/release/berth" serve "$@"
