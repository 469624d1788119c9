#!/usr/bin/env bash
# proxy-cache.sh OUT [IMAGES=50]
# Issue #13's proxy-cache figures: hit against miss latency of a proxy cache
# project (docs/proxy-cache.md) whose upstream is CNCF distribution 2.8.2 on
# the same machine. IMAGES images of the harness's `many` set
# (../shared/bench/make-images.py; three layers each, the last unique) are
# pushed with skopeo into distribution, one repository each; berth (release
# build, local disk, auth off) gets a proxy cache project `hub` of it with
# `berthctl project add hub --public --proxy URL`. Then, per image, with
# curl on a fresh connection each time (time_total):
#   blob miss    GET of its unique layer through berth, never fetched before
#                (berth fetches it upstream, stores it and streams it on)
#   blob hit     the same GET again (served from berth's store)
#   blob direct  the same GET from distribution itself
#   manifest miss / hit / direct   likewise for its manifest by tag (the hit
#                within the revalidation time: no upstream request)
# Writes OUT/latency.txt (one line per sample) and OUT/results.txt (median
# and p90 in ms per kind, and the medians' ratios) and prints the latter.
# Needs BERTH_BIN and BERTHCTL_BIN (release builds), skopeo, curl,
# docker-registry (installed by start-distribution.sh if missing).
set -euo pipefail
OUT=${1:?usage: proxy-cache.sh OUT [IMAGES]}; N=${2:-50}
BIN=${BERTH_BIN:?set BERTH_BIN to a release build of berth}
CTL=${BERTHCTL_BIN:?set BERTHCTL_BIN to a release build of berthctl}
HERE=$(cd "$(dirname "$0")" && pwd); SHARED=$(cd "$HERE/../../shared/bench" && pwd)
IMAGES=${BENCH_IMAGES:-/tmp/registry-bench-images}
UP=${BENCH_UPSTREAM_PORT:-15200}; PORT=${BENCH_PORT:-15201}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); WORK=$OUT/work; rm -rf "$WORK"; mkdir -p "$WORK"
[[ -d $IMAGES/many ]] || python3 "$SHARED/make-images.py" "$IMAGES"

cleanup() {
  "$SHARED/stop-berth.sh" "$PORT" "$WORK/berth" >/dev/null 2>&1 || true
  "$SHARED/stop-distribution.sh" "$UP" "$WORK/dist" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$SHARED/start-distribution.sh" "$UP" "$WORK/dist" >/dev/null
for ((i = 0; i < N; i++)); do
  printf -v tag 'img%03d' "$i"
  skopeo --insecure-policy copy -q --dest-tls-verify=false \
    "oci:$IMAGES/many:$tag" "docker://127.0.0.1:$UP/p/img$i:$tag"
done

mkdir -p "$WORK/berth"; chmod 700 "$WORK/berth"
"$CTL" --data-dir "$WORK/berth" project add hub --public --proxy "http://127.0.0.1:$UP" >/dev/null
BERTH_PROXY_REVALIDATE_SECONDS=3600 BERTH_BIN=$BIN "$SHARED/start-berth.sh" "$PORT" "$WORK/berth" >/dev/null

ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json'
get() { # KIND URL [HEADER]
  local t code
  read -r code t < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' ${3:+-H "$3"} "$2")
  [[ $code == 200 ]] || { echo "proxy-cache: $1 $2: HTTP $code" >&2; exit 1; }
  echo "$1 $t" >> "$OUT/latency.txt"
}
: > "$OUT/latency.txt"
for ((i = 0; i < N; i++)); do
  printf -v tag 'img%03d' "$i"
  manifest=$(curl -s -H "$ACCEPT" "http://127.0.0.1:$UP/v2/p/img$i/manifests/$tag")
  layer=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][-1]["digest"])' <<<"$manifest")
  get blob_miss "http://127.0.0.1:$PORT/v2/hub/p/img$i/blobs/$layer"
  get blob_hit "http://127.0.0.1:$PORT/v2/hub/p/img$i/blobs/$layer"
  get blob_direct "http://127.0.0.1:$UP/v2/p/img$i/blobs/$layer"
  get manifest_miss "http://127.0.0.1:$PORT/v2/hub/p/img$i/manifests/$tag" "$ACCEPT"
  # The miss's answer comes before the cache has stored the manifest (a
  # task stores its blobs, then it): wait for it, so the hit is one.
  for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:$PORT/v2/hub/p/img$i/tags/list" | grep -q "\"$tag\"" && break
    sleep 0.05
  done
  get manifest_hit "http://127.0.0.1:$PORT/v2/hub/p/img$i/manifests/$tag" "$ACCEPT"
  get manifest_direct "http://127.0.0.1:$UP/v2/p/img$i/manifests/$tag" "$ACCEPT"
done

python3 - "$OUT/latency.txt" > "$OUT/results.txt" <<'PY'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    k, t = line.split()
    by.setdefault(k, []).append(float(t) * 1000)
med = {}
for k in sorted(by):
    v = sorted(by[k])
    med[k] = statistics.median(v)
    print(f"{k}_median_ms={med[k]:.2f} {k}_p90_ms={v[int(0.9 * (len(v) - 1))]:.2f} {k}_n={len(v)}")
for kind in ("blob", "manifest"):
    print(f"{kind}_miss_over_hit={med[kind + '_miss'] / med[kind + '_hit']:.2f} "
          f"{kind}_miss_over_direct={med[kind + '_miss'] / med[kind + '_direct']:.2f} "
          f"{kind}_hit_over_direct={med[kind + '_hit'] / med[kind + '_direct']:.2f}")
PY
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%FT%TZ)" >> "$OUT/results.txt"
cat "$OUT/results.txt"
