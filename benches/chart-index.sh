#!/usr/bin/env bash
# chart-index.sh BIN_DIR WORK [RUNS]
# index.yaml GETs of one project holding 20,000 chart versions (200 charts
# x 100 versions, ~700 bytes of Chart.yaml metadata each, as
# benches/charts.rs), served by the release `berth` in BIN_DIR over
# HTTP/1.1, measured with curl (`%{time_total}`, body to /dev/null: what
# the server costs, not a client's copy of 22 MB):
#   after_change        the first plain GET after a chart upload
#   after_change_gzip   the first GET with Accept-Encoding: gzip after one
#                       (what Helm sends)
#   unchanged           a cached plain GET
#   unchanged_gzip      a cached gzip GET
# RUNS (default 15) samples of each; prints every sample in ms, then the
# medians. The charts are generated (python3) and imported once
# (`berthctl import chartmuseum`, BIN_DIR's) into WORK/seed; each run
# copies the seed, so different binaries start from the same index.
set -euo pipefail
BIN=${1:?usage: chart-index.sh BIN_DIR WORK [RUNS]}
WORK=${2:?usage: chart-index.sh BIN_DIR WORK [RUNS]}
RUNS=${3:-15}
PORT=${BENCH_PORT:-15080}
mkdir -p "$WORK"
if [ ! -e "$WORK/seed.done" ]; then
  rm -rf "$WORK/seed" "$WORK/charts"
  python3 - "$WORK/charts/bench" <<'PY'
import io, os, sys, tarfile
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
def chart_yaml(name, v):
    return f"""apiVersion: v2
name: {name}
version: {v}
appVersion: "{v}-app"
description: "A Helm chart for {name}: deploys the {name} service with sensible defaults, autoscaling and monitoring"
home: https://example.com/charts/{name}
sources:
  - https://github.com/example/{name}
keywords: [web, service, {name}]
maintainers:
  - name: Platform Team
    email: platform@example.com
    url: https://example.com/team
  - name: Ada Lovelace
    email: ada@example.com
icon: https://example.com/icons/{name}.png
annotations:
  artifacthub.io/license: Apache-2.0
  artifacthub.io/prerelease: "false"
kubeVersion: ">=1.22.0-0"
dependencies:
  - name: redis
    version: 17.x.x
    repository: https://charts.example.com
    condition: redis.enabled
type: application
"""
for k in range(200):
    name = f"service-{k:03}"
    for i in range(100):
        v = f"{i // 50}.{(i // 5) % 10}.{i % 5}"
        data = chart_yaml(name, v).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            info = tarfile.TarInfo(f"{name}/Chart.yaml")
            info.size = len(data)
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data))
        with open(f"{out}/{name}-{v}.tgz", "wb") as f:
            f.write(buf.getvalue())
PY
  mkdir -p "$WORK/seed" && chmod 700 "$WORK/seed"
  "$BIN/berthctl" import chartmuseum --data-dir "$WORK/seed" --from "$WORK/charts" >/dev/null
  touch "$WORK/seed.done"
fi

DATA="$WORK/run"
rm -rf "$DATA" && cp -a "$WORK/seed" "$DATA"
"$BIN/berth" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" >"$WORK/berth.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && break
  sleep 0.1
done
URL="http://127.0.0.1:$PORT/chartrepo/bench/index.yaml"
get() { # [curl args...]: prints the request's time in ms
  curl -s -o /dev/null -w '%{time_total}\n' "$@" "$URL" | awk '{printf "%.2f\n", $1 * 1000}'
}
# One new chart version per call (a new chart, so every upload changes
# the index the same way).
N=0
upload() {
  N=$((N + 1))
  local dir; dir=$(mktemp -d)
  mkdir "$dir/bench-new"
  printf 'apiVersion: v2\nname: bench-new\nversion: 1.0.%d\n' "$N" >"$dir/bench-new/Chart.yaml"
  tar -C "$dir" -czf "$dir/c.tgz" bench-new
  curl -sf -o /dev/null --data-binary @"$dir/c.tgz" \
    "http://127.0.0.1:$PORT/api/chartrepo/bench/charts"
  rm -rf "$dir"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
get >/dev/null # the first render (a full one)
get -H 'Accept-Encoding: gzip' >/dev/null
declare -A samples
for _ in $(seq "$RUNS"); do
  upload
  samples[after_change]+="$(get) "
  upload
  samples[after_change_gzip]+="$(get -H 'Accept-Encoding: gzip') "
  samples[unchanged]+="$(get) "
  samples[unchanged_gzip]+="$(get -H 'Accept-Encoding: gzip') "
done
size=$(curl -s "$URL" | wc -c)
gz=$(curl -s -H 'Accept-Encoding: gzip' "$URL" | wc -c)
echo "index.yaml: $size bytes, gzip $gz bytes; samples in ms:"
for k in after_change after_change_gzip unchanged unchanged_gzip; do
  echo "$k: ${samples[$k]}"
done
for k in after_change after_change_gzip unchanged unchanged_gzip; do
  printf '%s median %s ms\n' "$k" "$(tr ' ' '\n' <<<"${samples[$k]}" | grep . | median)"
done
grep -E '^Vm(RSS|HWM)' "/proc/$PID/status" | sed 's/^/berth /'
