#!/usr/bin/env bash
# run-series.sh OUTDIR RUNS NAME [NAME...]
# The side-by-side harness (../shared/bench/run-series.sh) with berth's own
# start scripts beside it: NAME may be distribution, berth (single node,
# RocksDB), berth-pg (one node on PostgreSQL + S3: BENCH_CLUSTER_NODES=1)
# or berth-cluster (three nodes behind haproxy). The harness looks for
# start-NAME.sh next to itself, so this runs a copy of it in a scratch
# directory holding links to both sets of scripts.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$(cd "$HERE/../../shared/bench" && pwd)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
for f in "$SHARED"/*; do ln -s "$f" "$SCRATCH/"; done
ln -s "$HERE/start-berth-cluster.sh" "$SCRATCH/start-berth-cluster.sh"
ln -s "$HERE/stop-berth-cluster.sh" "$SCRATCH/stop-berth-cluster.sh"
printf '#!/usr/bin/env bash\nBENCH_CLUSTER_NODES=1 exec "%s/start-berth-cluster.sh" "$@"\n' "$HERE" > "$SCRATCH/start-berth-pg.sh"
ln -s "$HERE/stop-berth-cluster.sh" "$SCRATCH/stop-berth-pg.sh"
chmod +x "$SCRATCH"/start-berth-pg.sh
rm "$SCRATCH/run-series.sh"; cp "$SHARED/run-series.sh" "$SCRATCH/run-series.sh"
"$SCRATCH/run-series.sh" "$@"
