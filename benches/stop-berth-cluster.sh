#!/usr/bin/env bash
# stop-berth-cluster.sh PORT DATADIR — stops what start-berth-cluster.sh started.
set -uo pipefail
DATADIR=${2:?usage: stop-berth-cluster.sh PORT DATADIR}
[[ -f $DATADIR.haproxy.pid ]] && kill "$(cat "$DATADIR.haproxy.pid")" 2>/dev/null
if [[ -f $DATADIR.pids ]]; then
  while read -r pid; do kill "$pid" 2>/dev/null; done < "$DATADIR.pids"
  while read -r pid; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done < "$DATADIR.pids"
fi
exit 0
