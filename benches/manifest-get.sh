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
# Also prints the CPU each load cost per request: the registry's
# processes (for berth-pg and berth-cluster its nodes, not haproxy) and,
# where there is one, PostgreSQL's (every process named postgres), in
# microseconds: what isolates the server on a machine whose two cores
# also run the database, the bucket and the load generator.
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
# CPU seconds (user + system) of the processes PIDS..., or of every
# process named postgres with "pg".
cpu() {
  python3 - "$@" <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
pids = sys.argv[1:]
if pids == ["pg"]:
    pids = []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "postgres":
                pids.append(p)
        except OSError:
            pass
total = 0
for p in pids:
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        pass
print(total / hz)
PY
}
for ((r = 1; r <= RUNS; r++)); do
  for name in "$@"; do
    data=$(mktemp -d)/d
    pid=$(start "$name" "$data")
    if [[ -f $data.pids ]]; then pids=$(cat "$data.pids"); else pids=$pid; fi
    skopeo --insecure-policy copy -q --dest-tls-verify=false \
      "oci:$IMAGES/many:img000" "docker://127.0.0.1:$PORT/bench/app:v1"
    digest=$(curl -sI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://127.0.0.1:$PORT/v2/bench/app/manifests/v1" | tr -d '\r' |
      awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
    for kind in tag digest; do
      ref=v1; [[ $kind == digest ]] && ref=$digest
      # shellcheck disable=SC2086
      c0=$(cpu $pids); p0=$(cpu pg)
      out=$(oha -z 10s -c 64 --no-tui --output-format json \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$PORT/v2/bench/app/manifests/$ref")
      # shellcheck disable=SC2086
      c1=$(cpu $pids); p1=$(cpu pg)
      python3 -c 'import json,sys; d=json.loads(sys.argv[1]); s=d["summary"]; p=d["latencyPercentiles"]
n = s["requestsPerSec"] * 10
c, pg = float(sys.argv[6]) - float(sys.argv[5]), float(sys.argv[8]) - float(sys.argv[7])
print("%s %s %s %.0f req/s p99 %.2f ms ok %.4f; CPU per request: registry %.0f us, postgres %.0f us" % (sys.argv[2], sys.argv[3], sys.argv[4], s["requestsPerSec"], p["p99"]*1000, s["successRate"], c / n * 1e6, pg / n * 1e6))' \
        "$out" "$name" "$r" "$kind" "$c0" "$c1" "$p0" "$p1"
    done
    stop "$name" "$data"
    rm -rf "$(dirname "$data")"
  done
done
