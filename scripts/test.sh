#!/usr/bin/env bash
# Runs every test: formatting, clippy, then unit, property, crash and
# end-to-end tests (real `berth` processes driven by skopeo), then a bounded
# fuzzing run of every parser (scripts/fuzz.sh), with a real
# Ceph RGW for the S3 and tiered stores. Installs the
# Debian packages it needs first. The cargo target dir lives outside the
# clone ($HOME/.cache/berth/target) so later runs reuse the RocksDB build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# rustup's default location, for shells that did not source its profile.
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --all --check
# Every cargo call selects the same packages and targets: feature unification
# then stays identical and RocksDB is built once, not once per selection.
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests start the real binaries from the target dir.
cargo build --workspace --all-targets
log=$(mktemp)
# The S3 and tiered tests run against a real Ceph RGW (../shared/s3 sits
# beside the project root), over plain HTTP and through a TLS-terminating
# haproxy with a private CA (scripts/s3-tls-front.sh); their S3_* variables
# are exported for the tests, which fail without them. Both are stopped
# (and the RGW data purged) on exit.
dir=$(mktemp -d)
trap 'bash scripts/s3-tls-front.sh stop "$dir/tls" >/dev/null 2>&1 || true; bash ../shared/s3/ceph-rgw-stop.sh "$dir/rgw" --purge >/dev/null 2>&1 || true; bash ../shared/pg/pg-stop.sh "$dir/pg" --purge >/dev/null 2>&1 || true; rm -rf "$dir" "$log"' EXIT
bash ../shared/s3/ceph-rgw-start.sh auto "$dir/rgw" >/dev/null
set -a
. "$dir/rgw/s3.env"
set +a
bash scripts/s3-tls-front.sh start "$S3_ENDPOINT" "$dir/tls" >/dev/null
set -a
. "$dir/tls/s3-tls.env"
set +a
# Cluster mode's index of record: a throwaway PostgreSQL (../shared/pg).
# The engine's model and API tests run on it as well as on RocksDB, each
# test in a schema of its own; the cluster end-to-end tests start their
# nodes on it. Required: a test that would skip without it fails instead.
BERTH_TEST_DATABASE_URL=$(bash ../shared/pg/pg-start.sh auto "$dir/pg")
export BERTH_TEST_DATABASE_URL BERTH_TEST_DATABASE_REQUIRED=1
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
# Coverage-guided fuzzing of every parser of untrusted bytes, 60 s per
# target, two at a time (~6 minutes; its own target dir, no RocksDB).
scripts/fuzz.sh "${BERTH_FUZZ_SECONDS:-60}"
