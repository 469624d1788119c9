#!/usr/bin/env bash
# pull-counts.sh RUNS BEFORE_BIN AFTER_BIN
# What counting pulls costs the manifest read path: manifest GET by tag
# (ab, keep-alive, 32 connections, 100,000 requests) against two berth
# release binaries — one without pull counts (BEFORE_BIN), one with
# (AFTER_BIN) — interleaved, a fresh server and one small image pushed
# with skopeo per run. Prints per run: NAME RUN req/s p50-ms p99-ms and
# the CPU berth used per request (µs, from /proc), which isolates the
# server on a machine whose cores also run ab.
# Needs: ab (apache2-utils), skopeo, the harness's images
# (/tmp/registry-bench-images, make-images.py).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$(cd "$HERE/../../shared/bench" && pwd)
RUNS=${1:?usage: pull-counts.sh RUNS BEFORE_BIN AFTER_BIN}
BEFORE=${2:?before binary}; AFTER=${3:?after binary}
PORT=${BENCH_PORT:-15200}; N=${BENCH_REQUESTS:-100000}; C=${BENCH_CONNECTIONS:-32}
IMAGES=${BENCH_IMAGES:-/tmp/registry-bench-images}
[[ -d $IMAGES/many ]] || python3 "$SHARED/make-images.py" "$IMAGES"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
one() { # NAME BIN RUN
  local data=$WORK/$1-$3 pid t0 t1 out
  pid=$(BERTH_BIN=$2 "$SHARED/start-berth.sh" "$PORT" "$data")
  skopeo --insecure-policy copy -q --dest-tls-verify=false \
    "oci:$IMAGES/many:img000" "docker://127.0.0.1:$PORT/bench/app:v1"
  t0=$(ticks "$pid")
  out=$(ab -k -q -c "$C" -n "$N" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json" \
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
    "http://127.0.0.1:$PORT/v2/bench/app/manifests/v1")
  t1=$(ticks "$pid")
  "$SHARED/stop-berth.sh" "$PORT" "$data" >/dev/null 2>&1 || kill "$pid"
  local rps p50 p99 failed
  rps=$(awk '/^Requests per second/ {print $4}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  failed=$(awk '/^Non-2xx responses/ {print $3}' <<<"$out")
  echo "$1 run=$3 req_s=$rps p50_ms=$p50 p99_ms=$p99 non2xx=${failed:-0} cpu_us_per_req=$(python3 -c "print(round(($t1-$t0)/$HZ*1e6/$N, 1))")"
}
for ((r = 1; r <= RUNS; r++)); do
  one before "$BEFORE" "$r"
  one after "$AFTER" "$r"
done
