#!/usr/bin/env bash
# console-pages.sh BIN_DIR WORK [RUNS]
# Server time of the console's first pages on a large registry (issue #15:
# <= 100 ms): the release `berth` in BIN_DIR, auth on, one project with
# 10,000 repositories and one repository with 10,000 tags (one small
# image, pushed over the registry API by a keep-alive Python client into
# WORK/seed once; each run copies the seed). curl's `%{time_total}` of
# each page GET with a signed-in session, body to /dev/null, RUNS
# (default 15) samples each; prints the samples in ms and the medians:
#   projects      /console/projects
#   repositories  /console/project?name=big (first page of 10,000)
#   artifacts     /console/repository?name=tags/app (first page; 10,000 tags)
#   api_repos     the API read the repositories page makes, alone
set -euo pipefail
BIN=${1:?usage: console-pages.sh BIN_DIR WORK [RUNS]}
WORK=${2:?usage: console-pages.sh BIN_DIR WORK [RUNS]}
RUNS=${3:-15}
PORT=${BENCH_PORT:-15081}
PASS=bench-password
mkdir -p "$WORK"
start() {
  BERTH_AUTH_ENABLED=true BERTH_ADMIN_PASSWORD=$PASS \
    "$BIN/berth" serve --data-dir "$1" --listen "127.0.0.1:$PORT" >"$WORK/berth.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && return
    sleep 0.1
  done
}
if [ ! -e "$WORK/seed.done" ]; then
  rm -rf "$WORK/seed" && mkdir -p "$WORK/seed" && chmod 700 "$WORK/seed"
  start "$WORK/seed"
  python3 - "$PORT" "$PASS" <<'PY'
import base64, hashlib, http.client, json, sys
port, password = int(sys.argv[1]), sys.argv[2]
auth = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
c = http.client.HTTPConnection("127.0.0.1", port)
def req(method, path, body=b"", headers=None):
    h = {"Authorization": auth}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return r
for p in ("big", "tags"):
    req("POST", "/api/v2.0/projects", json.dumps({"project_name": p}).encode(),
        {"Content-Type": "application/json"})
config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
layer = b"layer bytes"
def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": len(layer)}],
}).encode()
def push_blobs(repo):
    for b in (config, layer):
        r = req("POST", f"/v2/{repo}/blobs/uploads/")
        loc = r.getheader("Location")
        loc = loc[loc.index("/v2/"):] if "://" in loc else loc
        sep = "&" if "?" in loc else "?"
        req("PUT", f"{loc}{sep}digest={digest(b)}", b,
            {"Content-Type": "application/octet-stream"})
def put(repo, ref):
    req("PUT", f"/v2/{repo}/manifests/{ref}", manifest,
        {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
for i in range(10000):
    repo = f"big/app-{i:05}"
    # The blobs are mounted from the first repository after it.
    if i == 0:
        push_blobs(repo)
    else:
        for b in (config, layer):
            req("POST", f"/v2/{repo}/blobs/uploads/?mount={digest(b)}&from=big/app-00000")
    put(repo, "1.0")
push_blobs("tags/app")
for i in range(10000):
    put("tags/app", f"v{i:05}")
PY
  kill $PID; wait $PID 2>/dev/null || true
  touch "$WORK/seed.done"
fi
DATA="$WORK/run"
rm -rf "$DATA" && cp -a "$WORK/seed" "$DATA"
start "$DATA"
trap 'kill $PID 2>/dev/null || true' EXIT
JAR="$WORK/cookies"
curl -s -o /dev/null -c "$JAR" --data "principal=admin&password=$PASS" \
  "http://127.0.0.1:$PORT/console/login"
get() { # URL [curl args]: prints the request's time in ms
  curl -s -o /dev/null -b "$JAR" -w '%{http_code} %{time_total}\n' "${@:2}" "http://127.0.0.1:$PORT$1" |
    awk '$1 != 200 { print "HTTP " $1 > "/dev/stderr"; exit 1 } { printf "%.2f\n", $2 * 1000 }'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
declare -A pages=(
  [projects]="/console/projects"
  [repositories]="/console/project?name=big"
  [artifacts]="/console/repository?name=tags/app"
  [api_repos]="/api/v2.0/projects/big/repositories?page=1&page_size=25"
)
order="projects repositories artifacts api_repos"
for k in $order; do get "${pages[$k]}" >/dev/null; done # warm
declare -A samples
for _ in $(seq "$RUNS"); do
  for k in $order; do samples[$k]+="$(get "${pages[$k]}") "; done
done
echo "samples in ms:"
for k in $order; do echo "$k: ${samples[$k]}"; done
for k in $order; do
  printf '%s median %s ms\n' "$k" "$(tr ' ' '\n' <<<"${samples[$k]}" | grep . | median)"
done
grep -E '^Vm(RSS|HWM)' "/proc/$PID/status" | sed 's/^/berth /'
