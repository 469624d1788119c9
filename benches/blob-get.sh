#!/usr/bin/env bash
# usage: benches/blob-get.sh RUNS NAME...   (NAME: berth, distribution, ...)
#
# Blob GET side by side, the shape of the harness's blob GET step: for each
# run and each registry (interleaved: A B A B ...), a fresh process and data
# dir from ../shared/bench/start-NAME.sh, one 64 MiB blob, 10 s of oha with
# 4 connections. Prints one line per run: MiB/s, server CPU seconds over the
# window, CPU seconds per GiB served, peak RSS. berth is $BERTH_BIN (see
# start-berth.sh). Needs oha (cargo install oha --locked), curl, python3.
set -euo pipefail
RUNS=${1:?usage: blob-get.sh RUNS NAME...}; shift
BENCH=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
PORT=5098
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
head -c $((64<<20)) /dev/urandom > "$D/blob"
DG=sha256:$(python3 -c "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())" "$D/blob")
for run in $(seq 1 "$RUNS"); do
  for name in "$@"; do
    data="$D/$name-$run"
    pid=$("$BENCH/start-$name.sh" $PORT "$data")
    # POST + PUT: distribution 2.8 has no single-POST upload.
    loc=$(curl -sf -o /dev/null -w '%header{location}' -X POST "http://127.0.0.1:$PORT/v2/b/x/blobs/uploads/")
    [[ $loc == http* ]] || loc="http://127.0.0.1:$PORT$loc"
    [[ $loc == *\?* ]] && sep='&' || sep='?'
    curl -sf -o /dev/null -X PUT --data-binary @"$D/blob" -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$DG"
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/b/x/blobs/$DG") == 200 ]] \
      || { echo "blob-get: $name did not store the blob" >&2; exit 1; }
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    oha -z 10s -c 4 --no-tui --output-format json "http://127.0.0.1:$PORT/v2/b/x/blobs/$DG" > "$D/oha.json" 2>/dev/null || true
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
    python3 - "$D/oha.json" "$name" "$run" "$t0" "$t1" "$hwm" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["summary"]
name, run, t0, t1, hwm = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
mib_s = j["sizePerSec"] / 2**20
cpu = (t1 - t0) / 100
print(f"{name:13} run {run}: {mib_s:7.0f} MiB/s  server CPU {cpu:5.2f} s  "
      f"{cpu / (mib_s * 10 / 1024):.3f} CPU s/GiB  peak RSS {hwm / 1024:.0f} MiB")
PY
    "$BENCH/stop-$name.sh" $PORT "$data"
  done
done
