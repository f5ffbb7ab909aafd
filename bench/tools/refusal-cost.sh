#!/bin/bash
# What a refusal costs redserve's main thread, beside the floor of any Node HTTP refusal
# (bench/tools/constant-503.mjs), under the same retry storm: 256 closed-loop clients that resend at
# once after a 503 (bench/storm.js), 5 s a point, rounds interleaved. redserve serves ResNet-18 x 8
# in mean mode with one worker and --max-queue 8, so its queue is full nearly all the time and
# nearly every request is a refusal at its headers.
#   npm run build && bench/tools/refusal-cost.sh [DIST ...]     (default: dist; each DIST a build of src/)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- dist
source bench/tools/lib.sh
package=$(resnet18_package)
point() { # label pid port
  local label=$1 pid=$2 port=$3 m0 m1
  m0=$(main_ns "$pid")
  out=$(node dist/bench/storm.js --url "http://127.0.0.1:$port" --clients 256 --seconds 5)
  m1=$(main_ns "$pid")
  set -- $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(d["statuses"].values()), d["statuses"].get("200",0), d["refusalMs"]["p50"], d["refusalMs"]["p99"])')
  [ "$1" -gt 0 ] || { echo "$label: no request answered" >&2; return 1; }
  echo "$label: $1 requests ($2 answered), 503 p50 $3 ms, p99 $4 ms, main thread $(( (m1 - m0) / 1000 / $1 )) us per request"
}
pids=()
trap 'kill ${pids[*]} 2>/dev/null' EXIT
node bench/tools/constant-503.mjs 18090 & pids+=($!)
port=18091
for d in "$@"; do
  node "$d/src/server.js" --model $package --sampling mean --workers 1 --max-queue 8 --port $port \
    --metrics-port off --log-level warn > /dev/null & pids+=($!)
  ready $port
  port=$((port + 1))
done
for round in 1 2 3; do
  point "constant-503 Node server" "${pids[0]}" 18090
  port=18091; i=1
  for d in "$@"; do point "redserve ($d)" "${pids[$i]}" $port; port=$((port + 1)); i=$((i + 1)); done
done
