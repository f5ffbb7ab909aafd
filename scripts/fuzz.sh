#!/usr/bin/env bash
# Fuzz the running service against its own openapi.yaml with schemathesis (PyPI), in two passes:
# positive (requests the schema allows) and negative (requests it forbids), a bounded number of
# examples per operation. Passes when no answer is a 5xx and every answer agrees with the document
# (status code, content type, body schema, headers). Not part of scripts/test.sh: a few minutes.
#
#   bash scripts/fuzz.sh                 # 100 examples per operation and mode
#   FUZZ_EXAMPLES=500 bash scripts/fuzz.sh
#   FUZZ_MODES=negative bash scripts/fuzz.sh   # one pass only
#
# schemathesis goes into its own virtual environment ($FUZZ_VENV), never .venv. The server serves
# the test fixture package (tiny, fast) on a loopback port; its log is kept in $FUZZ_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/redserve/fuzz-venv}
out=${FUZZ_OUT:-$(mktemp -d /tmp/redserve-fuzz.XXXXXX)}
port=${FUZZ_PORT:-18680}
examples=${FUZZ_EXAMPLES:-100}
model=${FUZZ_MODEL:-test/fixtures/tiny-ensemble}

if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
npm run build --silent

node dist/src/server.js --model "$model" --host 127.0.0.1 --port "$port" --metrics-port off --workers 1 \
  > "$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.2
done

status=0
for mode in ${FUZZ_MODES:-positive negative}; do
  echo "== schemathesis, $mode mode, $examples examples per operation"
  "$venv/bin/schemathesis" run openapi.yaml --url "http://127.0.0.1:$port" --mode "$mode" --max-examples "$examples" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --generation-deterministic --generation-database none --report junit --report-dir "$out/$mode" --no-color || status=1
done
kill -0 "$server" 2>/dev/null || { echo "the server died during the fuzz run" >&2; status=1; }
echo "server error log lines (500s): $(grep -c '"level":50' "$out/server.log" || true)"
echo "reports and server log: $out"
exit "$status"
