#!/usr/bin/env bash
# start-berth-cluster.sh PORT DATADIR
# Starts berth in cluster mode for the side-by-side harness
# (../shared/bench/run-series.sh, through benches/run-series.sh): NODES berth
# processes (env BENCH_CLUSTER_NODES, default 3) on one PostgreSQL database
# and one S3 bucket prefix, behind haproxy (round-robin, no stickiness) on
# 127.0.0.1:PORT; with one node, the node itself listens on PORT. Each run
# gets a fresh database schema and bucket prefix.
#
# Needs: BENCH_DATABASE_URL (a postgres:// URL, e.g. from
# ../shared/pg/pg-start.sh), the S3 settings of ../shared/s3/*-start.sh
# (S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION; bucket
# BENCH_S3_BUCKET, default berth-bench, created if missing), haproxy for
# more than one node, and $BERTH_BIN (a release build). Prints the PID of
# the process on PORT (haproxy, or the single node) once /v2/ answers; the
# node PIDs go to DATADIR.pids for stop-berth-cluster.sh.
set -euo pipefail
PORT=${1:?usage: start-berth-cluster.sh PORT DATADIR}
DATADIR=${2:?usage: start-berth-cluster.sh PORT DATADIR}
BIN=${BERTH_BIN:?set BERTH_BIN to a release build of berth}
NODES=${BENCH_CLUSTER_NODES:-3}
: "${BENCH_DATABASE_URL:?set BENCH_DATABASE_URL (../shared/pg/pg-start.sh prints one)}"
: "${S3_ENDPOINT:?set the S3_* variables (../shared/s3/*-start.sh writes them)}"
BUCKET=${BENCH_S3_BUCKET:-berth-bench}
mkdir -p "$DATADIR"; DATADIR=$(cd "$DATADIR" && pwd)
RUN=r$(date +%s%N | sha256sum | cut -c1-12)
# The bucket, created once (an existing one answers 409 and is fine).
# SigV4 by curl; the payload hash is the empty body's, which RGW checks.
curl -s -o /dev/null -X PUT --aws-sigv4 "aws:amz:${S3_REGION:-us-east-1}:s3" \
  -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
  --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$S3_ENDPOINT/$BUCKET" || true
export BERTH_STORAGE_BACKEND=s3 BERTH_S3_ENDPOINT=$S3_ENDPOINT BERTH_S3_BUCKET=$BUCKET \
  BERTH_S3_ACCESS_KEY=$S3_ACCESS_KEY BERTH_S3_SECRET_KEY=$S3_SECRET_KEY \
  BERTH_S3_REGION=${S3_REGION:-us-east-1} BERTH_S3_ROOT=$RUN \
  BERTH_DATABASE_URL=$BENCH_DATABASE_URL BERTH_DATABASE_SCHEMA=$RUN
wait_v2() { # PORT PID LOG
  for _ in $(seq 1 150); do
    if curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/" | grep -q 200; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "start-berth-cluster: exited, see $3" >&2; cat "$3" >&2; return 1; }
    sleep 0.1
  done
  echo "start-berth-cluster: port $1 not answering after 15 s" >&2; return 1
}
: > "$DATADIR.pids"
if [[ $NODES == 1 ]]; then
  RUST_LOG=${RUST_LOG:-warn} nohup "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATADIR/n1" \
    >"$DATADIR.n1.log" 2>&1 </dev/null &
  echo $! >> "$DATADIR.pids"
  wait_v2 "$PORT" $! "$DATADIR.n1.log"; echo $!; exit 0
fi
servers=""
for i in $(seq 1 "$NODES"); do
  p=$((PORT + i))
  RUST_LOG=${RUST_LOG:-warn} nohup "$BIN" serve --listen "127.0.0.1:$p" --data-dir "$DATADIR/n$i" \
    >"$DATADIR.n$i.log" 2>&1 </dev/null &
  pid=$!; echo "$pid" >> "$DATADIR.pids"
  wait_v2 "$p" "$pid" "$DATADIR.n$i.log"
  servers+="    server n$i 127.0.0.1:$p
"
done
cat > "$DATADIR.haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option http-keep-alive
frontend registry
    bind 127.0.0.1:$PORT
    default_backend berth
backend berth
    balance roundrobin
$servers
CFG
haproxy -f "$DATADIR.haproxy.cfg" -D -p "$DATADIR.haproxy.pid"
HPID=$(cat "$DATADIR.haproxy.pid")
wait_v2 "$PORT" "$HPID" "$DATADIR.haproxy.cfg"
echo "$HPID"
