#!/bin/bash
# Answered requests/s under 16 clients and under a 256-client retry storm (clients that resend at
# once after a 503; bench/storm.js, 5 s a point), fmnist-baseline with --max-queue 16, for each
# build of src/ given (default: dist), 2 rounds interleaved.
#   npm run build && bench/tools/storm-goodput.sh [DIST ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- dist
source bench/tools/lib.sh
pids=()
trap 'kill ${pids[*]} 2>/dev/null' EXIT
port=18082
for d in "$@"; do
  node "$d/src/server.js" --model models/fmnist-baseline --max-queue 16 --port $port --metrics-port off --log-level warn > /dev/null & pids+=($!)
  ready $port
  node dist/bench/storm.js --url "http://127.0.0.1:$port" --clients 16 --seconds 2 > /dev/null # warm-up
  port=$((port + 1))
done
for _ in 1 2; do
  port=18082; i=0
  for d in "$@"; do
    for c in 16 256; do
      node dist/bench/storm.js --url "http://127.0.0.1:$port" --clients $c --seconds 5 --pid "${pids[$i]}" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print(f"{sys.argv[1]}, {sys.argv[2]} clients: answered/s", d["answersPerS"], " 503/s", d["refusedPerS"], " 503 p99 ms", d["refusalMs"]["p99"], " server cores", d["serverCpuPerS"])' "$d" "$c"
    done
    port=$((port + 1)); i=$((i + 1))
  done
done
