#!/usr/bin/env bash
# usage: benches/blob-get.sh BERTH_BIN — one berth process, one 64 MiB blob,
# 10 s of oha with 4 connections: server CPU seconds, MiB/s and peak RSS.
# Needs oha (cargo install oha --locked), curl, sha256sum.
set -euo pipefail
BIN=$1; PORT=5099; D=$(mktemp -d)
"$BIN" serve --listen 127.0.0.1:$PORT --data-dir $D/data >/dev/null 2>&1 &
PID=$!; sleep 1
head -c $((64<<20)) /dev/urandom > $D/blob
DG=sha256:$(sha256sum $D/blob | cut -d' ' -f1)
curl -s -o /dev/null -X POST --data-binary @$D/blob -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$PORT/v2/b/x/blobs/uploads/?digest=$DG"
t0=$(awk '{print $14+$15}' /proc/$PID/stat)
oha -z 10s -c 4 --no-tui --output-format json "http://127.0.0.1:$PORT/v2/b/x/blobs/$DG" > $D/oha.json 2>/dev/null || true
t1=$(awk '{print $14+$15}' /proc/$PID/stat)
python3 -c "
import json; j=json.load(open('$D/oha.json')); s=j['summary']
print('rps', round(s['requestsPerSec'],1), 'MiB/s', round(s['sizePerSec']/2**20), 'server_cpu_s', ($t1-$t0)/100)"
grep VmHWM /proc/$PID/status
kill $PID; wait $PID 2>/dev/null || true; rm -rf $D
