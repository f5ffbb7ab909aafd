#!/bin/bash
# The event loop's CPU per request as a fresh server serves more requests: ResNet-18 x 8, one client
# sending sequential binary requests, WINDOWS consecutive 4 s windows; prints main-thread us per
# request / requests in each window. Arguments are node flags for the server (V8's tier-up, e.g.
# --interrupt-budget=4096); WARM=1 first sends 16 clients for 10 s.
#   npm run build && bench/tools/tier-up.sh [NODE_FLAGS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/tools/lib.sh
package=$(resnet18_package)
model=bench-resnet18x8
port=18084
windows=${WINDOWS:-5}
node "$@" dist/src/server.js --model $package --port $port --metrics-port off --log-level warn > /dev/null &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
ready $port
if [ "${WARM:-0}" = 1 ]; then
  for _ in $(seq 16); do node bench/tools/sequential-binary.mjs $port 10 $model > /dev/null & done
  wait $(jobs -p | grep -v "^$pid$")
fi
warmed=''
[ "${WARM:-0}" = 1 ] && warmed=' after 16 clients x 10 s'
line="node flags [$*]$warmed:"
for _ in $(seq "$windows"); do
  m0=$(main_ns "$pid")
  read -r n bad < <(node bench/tools/sequential-binary.mjs $port 4 $model | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["n"], d["bad"])')
  m1=$(main_ns "$pid")
  if [ "$bad" != 0 ] || [ "$n" = 0 ]; then echo "window failed: $bad of $n requests not answered 200" >&2; exit 1; fi
  line="$line $(( (m1 - m0) / 1000 / n )) us/$n"
done
echo "$line"
