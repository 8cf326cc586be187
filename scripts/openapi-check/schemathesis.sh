#!/usr/bin/env bash
# Fuzz the kksync sandbox against the spec with schemathesis (an independent tool).
#
#   scripts/openapi-check/schemathesis.sh path/to/kksync [positive|all] [max-examples]
#
# positive (default): only schema-valid requests; checks that the answers conform
#   (status code, content type, headers, response schema) and that nothing answers 5xx.
# all: also schema-violating requests, with every check (negative_data_rejection and
#   friends too), which mostly measures how lenient the sandbox's input checks are.
# Env: VENV (default /tmp/oapi-venv), OUT (default: a new /tmp/oapi-st.XXXXXX), MAX_TIME (180).
set -euo pipefail
BIN=$(readlink -f "${1:?usage: schemathesis.sh path/to/kksync [positive|all] [max-examples]}")
MODE=${2:-positive}
N=${3:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
SPEC=${SPEC:-$(readlink -f "$HERE/../../../shared/reference/komfortkasse-openapi.yaml")}
VENV=${VENV:-/tmp/oapi-venv}
OUT=${OUT:-$(mktemp -d /tmp/oapi-st.XXXXXX)}
MAX_TIME=${MAX_TIME:-180}
KEY=st-key
mkdir -p "$OUT"
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis
fi

"$BIN" sandbox --listen 127.0.0.1:0 --api-key "$KEY" --pay-rate 0.5 --pay-interval 2s \
    >"$OUT/sandbox.log" 2>&1 &
SB_PID=$!
trap 'kill $SB_PID 2>/dev/null || true; wait $SB_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q 'listening on' "$OUT/sandbox.log" && break; sleep 0.1; done
ADDR=$(grep -o 'http://[0-9.]*:[0-9]*' "$OUT/sandbox.log" | head -1)

if [ "$MODE" = positive ]; then
  ARGS=(--mode positive --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance)
else
  ARGS=(--mode all --checks all)
fi
rc=0
"$VENV/bin/schemathesis" run "$SPEC" --url "$ADDR/api/v2" -H "X-Komfortkasse-API-Key: $KEY" \
    -n "$N" --seed 1 --generation-database none --max-time "$MAX_TIME" -w 1 --no-color \
    --continue-on-failure --report json,ndjson --report-dir "$OUT/report" "${ARGS[@]}" \
    >"$OUT/schemathesis.txt" 2>&1 || rc=$?
sed -n '/SUMMARY/,$p' "$OUT/schemathesis.txt"
echo "full output: $OUT/schemathesis.txt (exit $rc)"
exit $rc
