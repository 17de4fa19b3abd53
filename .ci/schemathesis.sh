#!/usr/bin/env bash
# Schemathesis (PyPI) against the served /openapi.json for a bounded time: as the admin, then as a
# provider, with the checks not_a_server_error and response_schema_conformance; then a run of
# schema-valid payment requests only, to count how many the API accepts. Any failure fails CI.
# usage: .ci/schemathesis.sh [path/to/medpay]   (ST_SECONDS: seconds per run, default 40)
set -euo pipefail
BIN=$(realpath "${1:-target/debug/medpay}")
SECONDS_EACH=${ST_SECONDS:-40}
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${ST_VENV:-$HOME/.cache/medpay-schemathesis-4.32.5}
if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==4.32.5"
fi
WORK=$(mktemp -d)
PORT=${ST_PORT:-18190}
BASE=http://127.0.0.1:$PORT
ADMIN="st-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cd "$WORK"
# Limits that protect production from one client would stop a fuzzer that is one client.
MEDPAY_BIND=127.0.0.1:$PORT MEDPAY_ADMIN_TOKEN=$ADMIN RUST_LOG=warn \
  MEDPAY_REQUESTS_PER_KEY_PER_MINUTE=100000000 MEDPAY_PAYMENTS_PER_PATIENT_PER_MINUTE=100000000 \
  MEDPAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE=100000000 DATABASE_URL=sqlite://data/medpay.db \
  "$BIN" serve > medpay.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.2; done
curl -sf "$BASE/healthz" >/dev/null || { echo "medpay did not start"; cat medpay.log; exit 1; }
KEY=$(python3 "$HERE/schemathesis.py" "$BASE" "$ADMIN" "$WORK")

payments() { # POST /v1/payments answers so far with status $1 ("" for all)
  curl -s "$BASE/metrics" | awk -v s="$1" '/^medpay_http_requests_total\{route="\/v1\/payments",method="POST"/ {
    if (s == "" || index($0, "status=\"" s "\"")) n += $NF } END { print n + 0 }'
}
st() {
  "$VENV/bin/st" --config-file "$WORK/schemathesis.toml" run "$BASE/openapi.json" \
    --checks not_a_server_error,response_schema_conformance --request-timeout 10 \
    --exclude-path-regex '/(ws|stream)$' --no-color "$@"
}
echo "schemathesis as the admin (${SECONDS_EACH} s)"
st -H "Authorization: Bearer $ADMIN" --max-time "$SECONDS_EACH" > admin.txt 2>&1 || { cat admin.txt; exit 1; }
tail -n 4 admin.txt
echo "schemathesis as a provider (${SECONDS_EACH} s)"
st -H "Authorization: Bearer $KEY" --max-time "$SECONDS_EACH" > provider.txt 2>&1 || { cat provider.txt; exit 1; }
tail -n 4 provider.txt
all0=$(payments ""); ok0=$(payments 201); reused0=$(payments 422)
echo "schema-valid payment requests only (${SECONDS_EACH} s)"
st -H "Authorization: Bearer $KEY" --max-time "$SECONDS_EACH" --mode positive --phases fuzzing \
  --include-name "POST /v1/payments" > positive.txt 2>&1 || { cat positive.txt; exit 1; }
all=$(( $(payments "") - all0 )); ok=$(( $(payments 201) - ok0 )); reused=$(( $(payments 422) - reused0 ))
# The generator keeps a header's value while it varies the body: a key sent again with another
# body is refused (422), as it must be. Of the rest, nearly all must be accepted.
fresh=$((all - reused))
echo "generated schema-valid payment requests: $all; with a key used before for another body (422): $reused;" \
  "of the other $fresh, accepted (201): $ok"
[ "$fresh" -gt 0 ] && [ $((ok * 10)) -ge $((fresh * 9)) ] || { echo "under 90 % accepted"; exit 1; }
