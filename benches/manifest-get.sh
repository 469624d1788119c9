#!/usr/bin/env bash
# manifest-get.sh RUNS NAME [NAME...]
# Manifest GET by tag and by digest at 64 connections (oha, 10 s each) for
# each registry NAME of benches/run-series.sh (berth, berth-pg,
# berth-cluster, distribution), interleaved, on a fresh server per run:
# one small image pushed with skopeo, then the two loads. The side-by-side
# harness measures GET by tag only; cluster mode's by-digest target needs
# both. Prints one line per run and load: NAME RUN KIND req/s p99-ms.
# Needs what the start scripts need (BERTH_BIN; for berth-pg and
# berth-cluster BENCH_DATABASE_URL and S3_*), skopeo, oha, and the
# harness's images (/tmp/registry-bench-images, make-images.py).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$(cd "$HERE/../../shared/bench" && pwd)
RUNS=${1:?usage: manifest-get.sh RUNS NAME...}; shift
PORT=${BENCH_PORT:-15000}
IMAGES=${BENCH_IMAGES:-/tmp/registry-bench-images}
start() { # NAME DATA
  case $1 in
    berth-pg) BENCH_CLUSTER_NODES=1 "$HERE/start-berth-cluster.sh" "$PORT" "$2" ;;
    berth-cluster) "$HERE/start-berth-cluster.sh" "$PORT" "$2" ;;
    *) "$SHARED/start-$1.sh" "$PORT" "$2" ;;
  esac
}
stop() { # NAME DATA
  case $1 in
    berth-pg|berth-cluster) "$HERE/stop-berth-cluster.sh" "$PORT" "$2" ;;
    *) "$SHARED/stop-$1.sh" "$PORT" "$2" ;;
  esac
}
for ((r = 1; r <= RUNS; r++)); do
  for name in "$@"; do
    data=$(mktemp -d)/d
    start "$name" "$data" >/dev/null
    skopeo --insecure-policy copy -q --dest-tls-verify=false \
      "oci:$IMAGES/many:img000" "docker://127.0.0.1:$PORT/bench/app:v1"
    digest=$(curl -sI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://127.0.0.1:$PORT/v2/bench/app/manifests/v1" | tr -d '\r' |
      awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
    for kind in tag digest; do
      ref=v1; [[ $kind == digest ]] && ref=$digest
      out=$(oha -z 10s -c 64 --no-tui --output-format json \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$PORT/v2/bench/app/manifests/$ref")
      python3 -c 'import json,sys; d=json.loads(sys.argv[1]); s=d["summary"]; p=d["latencyPercentiles"]
print("%s %s %s %.0f %.2f %.4f" % (sys.argv[2], sys.argv[3], sys.argv[4], s["requestsPerSec"], p["p99"]*1000, s["successRate"]))' \
        "$out" "$name" "$r" "$kind"
    done
    stop "$name" "$data"
    rm -rf "$(dirname "$data")"
  done
done
