#!/usr/bin/env bash
# import-backup.sh OUT [RUNS=2]
# Issue #13's figures: the harness's 200-image set (`many` of
# ../shared/bench/make-images.py, in 50 repositories as registry-bench.sh
# pushes it) pushed with skopeo into CNCF distribution 2.8.2 on a filesystem
# and, with its S3 driver, into a bucket of the S3 server; then per run:
#   - `berthctl import distribution` from the directory and from s3://…
#     into an empty data directory on local disk (images/s, MiB/s of blob
#     bytes copied, from the import's own JSON report, and the CPU seconds
#     berthctl used);
#   - the same bucket import into a berth that keeps its blobs in that
#     bucket (s3 backend, another root): each blob read once and copied
#     inside the bucket (the default), and streamed through berthctl as
#     from anywhere else (`--no-server-copy`), for comparison;
#   - `berthctl backup` of the directory imported from the filesystem:
#     full, then again with nothing new (incremental), with its size and
#     what it adds on disk beside the data (its blobs are hard links).
# Writes OUT/results.txt (key=value per run) and prints it.
# Needs: BERTHCTL_BIN (a release build of berthctl), the S3 variables of
# ../shared/s3/*-start.sh (S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY,
# S3_SECRET_KEY; bucket BENCH_S3_BUCKET, default berth-bench), skopeo,
# docker-registry (installed by start-distribution.sh if missing).
set -euo pipefail
OUT=${1:?usage: import-backup.sh OUT [RUNS]}; RUNS=${2:-2}
BIN=${BERTHCTL_BIN:?set BERTHCTL_BIN to a release build of berthctl}
: "${S3_ENDPOINT:?set the S3_* variables (../shared/s3/*-start.sh writes them)}"
HERE=$(cd "$(dirname "$0")" && pwd); SHARED=$(cd "$HERE/../../shared/bench" && pwd)
IMAGES=${BENCH_IMAGES:-/tmp/registry-bench-images}
BUCKET=${BENCH_S3_BUCKET:-berth-bench}; REGION=${S3_REGION:-us-east-1}
PORT=${BENCH_PORT:-15100}; REPOS=50; WORKERS=2
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); WORK=$OUT/work; rm -rf "$WORK"; mkdir -p "$WORK"
[[ -d $IMAGES/many ]] || python3 "$SHARED/make-images.py" "$IMAGES"
N=$(sed -n 's/^many_images=//p' "$IMAGES/meta.env")
RUN=r$(date +%s%N | sha256sum | cut -c1-12)
curl -s -o /dev/null -X PUT --aws-sigv4 "aws:amz:$REGION:s3" \
  -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
  --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$S3_ENDPOINT/$BUCKET" || true

push_all() { # HOSTPORT
  local w i tag pids=()
  for ((w = 0; w < WORKERS; w++)); do
    ( for ((i = w; i < N; i += WORKERS)); do
        printf -v tag 'img%03d' "$i"
        timeout 600 skopeo --insecure-policy copy -q --dest-tls-verify=false \
          "oci:$IMAGES/many:$tag" "docker://$1/p/many-$((i % REPOS)):$tag"
      done ) & pids+=($!)
  done
  wait "${pids[@]}"
}

# distribution on a filesystem.
FS=$WORK/dist-fs
"$SHARED/start-distribution.sh" "$PORT" "$FS" >/dev/null
push_all "127.0.0.1:$PORT"
"$SHARED/stop-distribution.sh" "$PORT" "$FS"

# distribution with its S3 driver, objects below $RUN/ in the bucket.
cat > "$WORK/dist-s3.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    region: $REGION
    regionendpoint: $S3_ENDPOINT
    bucket: $BUCKET
    accesskey: $S3_ACCESS_KEY
    secretkey: $S3_SECRET_KEY
    secure: false
    v4auth: true
    rootdirectory: /$RUN
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$PORT
YAML
# (distribution's S3 driver cannot load a CA bundle the environment names.)
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/dist-s3.yml" > "$WORK/dist-s3.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && break; sleep 0.1; done
push_all "127.0.0.1:$PORT"
kill "$DPID"; wait "$DPID" 2>/dev/null || true

export BERTH_S3_ENDPOINT=$S3_ENDPOINT BERTH_S3_REGION=$REGION \
  BERTH_S3_ACCESS_KEY=$S3_ACCESS_KEY BERTH_S3_SECRET_KEY=$S3_SECRET_KEY
RES=$OUT/results.txt; : > "$RES"
now() { date +%s.%N; }
calc() { python3 -c "print(round($1, 2))"; }
import_once() { # NAME FROM DATA [ARGS…]
  local t0 t1 bytes name=$1 from=$2 data=$3
  shift 3
  rm -rf "$data"; t0=$(now)
  /usr/bin/time -f "%U %S" -o "$WORK/$name.cpu" \
    "$BIN" import distribution --from "$from" --data-dir "$data" --report "$WORK/$name.json" "$@" >/dev/null
  t1=$(now)
  bytes=$(python3 -c "import json;print(json.load(open('$WORK/$name.json'))['bytes_copied'])")
  in_bucket=$(python3 -c "import json;print(json.load(open('$WORK/$name.json'))['blobs_copied_in_bucket'])")
  cpu=$(awk '{print $1 + $2}' "$WORK/$name.cpu")
  echo "run=$r import_${name}_s=$(calc "$t1-$t0") import_${name}_images_s=$(calc "$N/($t1-$t0)") import_${name}_mib_s=$(calc "$bytes/1048576/($t1-$t0)") import_${name}_bytes=$bytes import_${name}_in_bucket=$in_bucket import_${name}_cpu_s=$cpu" | tee -a "$RES"
}
for ((r = 1; r <= RUNS; r++)); do
  import_once fs "$FS" "$WORK/berth-fs"
  import_once s3 "s3://$BUCKET/$RUN" "$WORK/berth-s3"
  # berth's own blobs in the same bucket, below another root.
  BERTH_STORAGE_BACKEND=s3 BERTH_S3_BUCKET=$BUCKET BERTH_S3_ROOT=$RUN-berth-copy-$r \
    import_once s3copy "s3://$BUCKET/$RUN" "$WORK/berth-s3copy"
  BERTH_STORAGE_BACKEND=s3 BERTH_S3_BUCKET=$BUCKET BERTH_S3_ROOT=$RUN-berth-stream-$r \
    import_once s3stream "s3://$BUCKET/$RUN" "$WORK/berth-s3stream" --no-server-copy
  rm -rf "$WORK/backup"; t0=$(now)
  "$BIN" backup --out "$WORK/backup" --data-dir "$WORK/berth-fs" >/dev/null
  t1=$(now)
  "$BIN" backup --out "$WORK/backup" --data-dir "$WORK/berth-fs" >/dev/null
  t2=$(now)
  # The backup's blobs are hard links into the data directory: its own
  # size, and what it adds on disk beside the data (du counts an inode once).
  data=$(du -sb "$WORK/berth-fs" | cut -f1)
  both=$(du -scb "$WORK/berth-fs" "$WORK/backup" | tail -1 | cut -f1)
  echo "run=$r backup_full_s=$(calc "$t1-$t0") backup_again_s=$(calc "$t2-$t1") backup_bytes=$(du -sb "$WORK/backup" | cut -f1) backup_adds_bytes=$((both - data)) data_bytes=$data" | tee -a "$RES"
done
rm -rf "$WORK"
