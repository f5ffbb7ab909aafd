#!/usr/bin/env bash
# Fuzz the HTTP API with schemathesis against openapi.yaml, positive and negative cases, against a
# started server (the tiny fixture package, no metrics port). Passes when schemathesis reports no
# 5xx and no response or status outside the schema. schemathesis lives in a throwaway venv,
# .venv-fuzz (ignored by git), created on first use.
#
#   bash scripts/fuzz.sh                 # 25 examples per operation and mode
#   MAX_EXAMPLES=200 bash scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=.venv-fuzz
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
PORT=${PORT:-18199}
REPORT_DIR=${REPORT_DIR:-runs/fuzz}

# 1. schemathesis, pinned, in its own venv.
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

# 2. The server, built from this checkout.
npm run build --silent || [ -f dist/src/server.js ] # a type error elsewhere must not stop a fuzz run of the built server
mkdir -p "$REPORT_DIR"
node dist/src/server.js --model test/fixtures/tiny-ensemble --host 127.0.0.1 --port "$PORT" --metrics-port off \
  --workers 1 --log-level warn >"$REPORT_DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$REPORT_DIR/server.log"; exit 1; }
  sleep 0.2
done

# 3. Positive and negative cases, every check that needs no stateful links.
status=0
for mode in positive negative; do
  echo "== schemathesis --mode $mode"
  "$VENV/bin/schemathesis" run openapi.yaml --url "http://127.0.0.1:$PORT" --mode "$mode" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method \
    --phases examples,coverage,fuzzing --max-examples "$MAX_EXAMPLES" --generation-deterministic --no-color \
    --report junit --report-dir "$REPORT_DIR/$mode" || status=1
done
if grep -q '"level":50\|"level":60' "$REPORT_DIR/server.log"; then
  echo "the server logged errors (see $REPORT_DIR/server.log)"
  status=1
fi
exit $status
