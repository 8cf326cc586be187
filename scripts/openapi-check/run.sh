#!/usr/bin/env bash
# End-to-end OpenAPI conformance check of kksync (client) and its sandbox (server)
# through the validating proxy (proxy.py, openapi-core).
#
#   scripts/openapi-check/run.sh path/to/kksync [CSV]
#
# Env: VENV (default /tmp/oapi-venv), OUT (default: a new /tmp/oapi-check.XXXXXX),
#      SPEC (default: shared/reference/komfortkasse-openapi.yaml beside the repo),
#      FAULTS=0 to skip the 500/dropped-connection phase.
# Exit code: 0 when no request- or response-side violation was found, 1 otherwise.
set -euo pipefail

BIN=${1:?usage: run.sh path/to/kksync [orders.csv]}
BIN=$(readlink -f "$BIN")
HERE=$(cd "$(dirname "$0")" && pwd)
CSV=${2:-$HERE/../../examples/orders.csv}
SPEC=${SPEC:-$(readlink -f "$HERE/../../../shared/reference/komfortkasse-openapi.yaml")}
VENV=${VENV:-/tmp/oapi-venv}
OUT=${OUT:-$(mktemp -d /tmp/oapi-check.XXXXXX)}
FAULTS=${FAULTS:-1}
KEY=oapi-check-key
mkdir -p "$OUT"
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

# ---- 1. venv with openapi-core 0.23.x
if ! "$VENV/bin/python" -c 'import openapi_core' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'openapi-core>=0.23,<0.24'
fi
PY="$VENV/bin/python"

# wait_addr LOGFILE PID -> prints host:port from the first "listening on http://..." line
wait_addr() {
  local i
  for i in $(seq 1 100); do
    if grep -qo 'listening on http://[0-9.]*:[0-9]*' "$1" 2>/dev/null; then
      grep -o 'listening on http://[0-9.]*:[0-9]*' "$1" | head -1 | sed 's|listening on http://||'
      return 0
    fi
    kill -0 "$2" 2>/dev/null || { echo "process died: $(cat "$1")" >&2; return 1; }
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; return 1
}

# start_phase NAME SANDBOX-ARGS... ; sets SB, PX (host:port), SB_PID, PX_PID
start_phase() {
  local name=$1; shift
  "$BIN" sandbox --listen 127.0.0.1:0 --api-key "$KEY" "$@" >"$OUT/$name.sandbox.log" 2>&1 &
  SB_PID=$!; PIDS+=("$SB_PID")
  SB=$(wait_addr "$OUT/$name.sandbox.log" "$SB_PID")
  "$PY" "$HERE/proxy.py" --spec "$SPEC" --listen 127.0.0.1:0 --upstream "http://$SB" \
      --log "$OUT/violations.jsonl" --trace "$OUT/$name.trace.jsonl" \
      --tally-json "$OUT/$name.tally.json" >"$OUT/$name.proxy.log" 2>&1 &
  PX_PID=$!; PIDS+=("$PX_PID")
  PX=$(wait_addr "$OUT/$name.proxy.log" "$PX_PID")
  echo "[$name] sandbox $SB ($*), proxy $PX"
}

stop_phase() {
  kill -TERM "$PX_PID"; wait "$PX_PID" || true
  kill -TERM "$SB_PID"; wait "$SB_PID" 2>/dev/null || true
}

sync_once() { # NAME LABEL [extra sync args]
  local rc=0 name=$1 label=$2; shift 2
  KOMFORTKASSE_API_KEY=$KEY "$BIN" sync --source "$OUT/$name.orders.csv" \
      --api-url "http://$PX/api/v2" --rate 50 --burst 5 --no-progress --deadline 60s "$@" \
      >"$OUT/$name.sync-$label.log" 2>&1 || rc=$?
  # exit 3 = some rows rejected (the example CSV has 6 deliberately bad rows)
  echo "[$name] sync $label: exit $rc ($(grep -E '^\s+(accepted|rejected|requests)' "$OUT/$name.sync-$label.log" | tr -s ' ' | tr '\n' ';'))"
}

tick() { curl -s -X POST "http://$SB/_sandbox/tick" >/dev/null; }

# ---- 2./3. phase A: sync twice with a payment round in between, then direct calls
start_phase a --seed 7 --pay-rate 0.5
cp "$CSV" "$OUT/a.orders.csv"
sync_once a 1
tick
sync_once a 2

B="http://$PX/api/v2"
H="X-Komfortkasse-API-Key: $KEY"
J="Content-Type: application/json"
N1=$(awk -F';' 'NR==2{print $1}' "$CSV" | tr -d '\r\357\273\277')
N2=$(awk -F';' 'NR==3{print $1}' "$CSV" | tr -d '\r')
FUT=$(date -d '+30 days' +%d-%m-%Y)
TODAY=$(date +%d-%m-%Y)
PAST=$(date -d '-30 days' +%d-%m-%Y)
ORDER() { # number date
  printf '{"number":"%s","date":"%s","dueDate":"%s","type":"INVOICE","amount":149.9,"currency":"EUR","customerEmail":"erika@example.net","language":"de","items":[{"number":"TS-1","name":"Shirt"}],"invoiceNumbers":["RE-1"],"billing":{"gender":"female","firstName":"Erika","lastName":"Beispiel","countryCode":"DE"},"shipping":{"gender":"company","company":"X GmbH","countryCode":"DE"},"initialDunningLevel":0}' "$1" "$2" "$FUT"
}
call() { # LABEL curl-args...
  local label=$1; shift
  local code
  code=$(curl -s -o "$OUT/curl.body" -w '%{http_code}' "$@" || echo "000")
  printf '%-28s %s %s\n' "$label" "$code" "$(head -c 160 "$OUT/curl.body")" >>"$OUT/a.curl.log"
}
: >"$OUT/a.curl.log"
call readOrders           "$B/orders?paymentStatus=PAID,UNPAID&maxAge=30&includePostings=true" -H "$H"
call readOrders-all-incl  "$B/orders?includePostings=true&includeRefunds=true&includePaymentReminders=true&includeCollectionHistory=true" -H "$H"
call getOrder             "$B/order/$N1?includePostings=true&includeRefunds=true&includePaymentReminders=true&includeCollectionHistory=true" -H "$H"
call submitOrder          -X POST "$B/order/OAPI-1" -H "$H" -H "$J" -d "$(ORDER OAPI-1 "$TODAY")"
call submitOrder-update   -X POST "$B/order/OAPI-1?includePostings=true" -H "$H" -H "$J" -d "$(ORDER OAPI-1 "$TODAY")"
call setOrderPaid         -X POST "$B/order/OAPI-1/setpaid" -H "$H"
call setOrderUnpaid       -X POST "$B/order/OAPI-1/setunpaid" -H "$H"
call cancelOrder          -X POST "$B/order/OAPI-1/cancel" -H "$H"
call submitOrder-2        -X POST "$B/order/OAPI-2" -H "$H" -H "$J" -d "$(ORDER OAPI-2 "$TODAY")"
call removeOrder          -X POST "$B/order/remove/OAPI-2" -H "$H"
call createRefund         -X POST "$B/order/$N2/refund" -H "$H" -H "$J" -d "{\"externalReference\":\"RMA-OAPI-1\",\"amount\":49.95,\"currency\":\"EUR\",\"plannedDate\":\"$FUT\"}"
call getOrder-refunds     "$B/order/$N2?includeRefunds=true" -H "$H"
call submitInvoice        -X POST "$B/order/$N1/invoice/RE-OAPI-1" -H "$H" -F "file=@-;type=application/pdf;filename=inv.pdf" <<<'%PDF-1.4 minimal'
call readPostings         "$B/postings" -H "$H"
call readPostings-params  "$B/postings?createdMin=$PAST&createdMax=$FUT&includeOrders=true" -H "$H"
call getImage             "$B/image/$N1?type=QRCODE" -H "$H"
call getImage-slip        "$B/image/$N1?type=PAYMENTSLIP" -H "$H"
call getImage-default     "$B/image/$N1" -H "$H"
# error triggers; requests that break the spec on purpose carry the marker header so that
# their request-side findings are tallied as expected-invalid, not as client violations
X="X-OAPI-Check-Expect: invalid"
call err-wrong-key        "$B/orders" -H "X-Komfortkasse-API-Key: wrong"
call err-no-key           "$B/orders" -H "$X"
call err-missing-body     -X POST "$B/order/OAPI-3" -H "$H" -H "$J" -H "$X"
call err-missing-body-arr -X POST "$B/orders" -H "$H" -H "$J" -H "$X"
call err-bad-json         -X POST "$B/order/OAPI-3" -H "$H" -H "$J" -d '{"number":' -H "$X"
call err-unknown-order    "$B/order/NO-SUCH-ORDER" -H "$H"
call err-unknown-cancel   -X POST "$B/order/NO-SUCH-ORDER/cancel" -H "$H"
call err-unknown-image    "$B/image/NO-SUCH-ORDER?type=QRCODE" -H "$H"
call err-future-date      -X POST "$B/order/OAPI-4" -H "$H" -H "$J" -d "$(ORDER OAPI-4 "$FUT")"
call err-refund-past-date -X POST "$B/order/$N2/refund" -H "$H" -H "$J" -d "{\"externalReference\":\"RMA-OAPI-2\",\"amount\":1.00,\"currency\":\"EUR\",\"plannedDate\":\"$PAST\"}"
call err-refund-dup-ref   -X POST "$B/order/$N2/refund" -H "$H" -H "$J" -d "{\"externalReference\":\"RMA-OAPI-1\",\"amount\":1.00,\"currency\":\"EUR\",\"plannedDate\":\"$FUT\"}"
call err-bad-status-param "$B/orders?paymentStatus=paid" -H "$H" -H "$X"
call err-unknown-path     "$B/nothing-here" -H "$H" -H "$X"
# last, because a partial list marks every other open order LEGACY
call syncOrders           -X POST "$B/ordersync" -H "$H" -H "$J" -d "[\"$N1\",\"$N2\",\"OAPI-1\"]"
call readOrders-after     "$B/orders?paymentStatus=LEGACY,UNPAID,PAID" -H "$H"
echo "[a] direct calls: $(wc -l <"$OUT/a.curl.log") (see $OUT/a.curl.log)"
stop_phase

# ---- phase B: two syncs (smaller chunks, so more calls) against a sandbox that answers
# 20% of the calls with the injected 400 "Could not acquire lock"
start_phase b --seed 11 --pay-rate 0.5 --lock-error-rate 0.2
cp "$CSV" "$OUT/b.orders.csv"
sync_once b 1 --chunk-size 25
tick
sync_once b 2 --chunk-size 25
stop_phase

# ---- phase C (optional): 500s and dropped connections, reported apart
if [ "$FAULTS" = 1 ]; then
  start_phase c --seed 13 --pay-rate 0.5 --server-error-rate 0.15 --reset-rate 0.1
  cp "$CSV" "$OUT/c.orders.csv"
  sync_once c 1 --chunk-size 20
tick
sync_once c 2 --chunk-size 20
  stop_phase
fi

echo
"$PY" "$HERE/summarize.py" "$OUT"/*.tally.json | tee "$OUT/summary.txt"
echo
echo "violations log: $OUT/violations.jsonl; exchanges: $OUT/*.trace.jsonl"
if grep -q '"kind": "violation"' "$OUT/violations.jsonl" 2>/dev/null; then exit 1; fi
exit 0
