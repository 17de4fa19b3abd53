#!/usr/bin/env bash
# The server's memory after many payments from many patients: the same wrk script as
# ../shared/bench/compare.sh (64 connections, fresh Idempotency-Key per request) over PATIENTS
# patients (default 50,000) until about PAYMENTS payments (default 100,000) were made, with
# Celcoin's and Receita's sandboxes in processes of their own (so that the server's RSS is its
# own: the sandboxes keep every charge and CPF they were asked for). Prints the payments made,
# the rate, and the RSS of the server and of each sandbox.
# usage: benches/memory.sh [path/to/medpay]   (MEDPAY_* settings pass through, e.g. MEDPAY_ACTOR_IDLE_MS)
set -euo pipefail
BIN=$(realpath "${1:-target/release/medpay}")
SHARED=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
PATIENTS=${PATIENTS:-50000}
PAYMENTS=${PAYMENTS:-100000}
WORK=$(mktemp -d)
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cd "$WORK"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SERVER=$(port); CELCOIN=$(port); RECEITA=$(port)
"$BIN" sandbox celcoin --bind "127.0.0.1:$CELCOIN" --webhook-url "http://127.0.0.1:$SERVER/v1/gateways/celcoin/webhooks" \
  --webhook-password bench-hook > celcoin.log 2>&1 &
CP=$!
"$BIN" sandbox receita --bind "127.0.0.1:$RECEITA" > receita.log 2>&1 &
RP=$!
trap 'kill $CP $RP $MP 2>/dev/null || true' EXIT
sleep 1
MEDPAY_BIND=127.0.0.1:$SERVER MEDPAY_ADMIN_TOKEN=bench-admin RUST_LOG=warn MEDPAY_SCORING_HOUR=14 \
  MEDPAY_PAYMENTS_PER_PATIENT_PER_MINUTE=1000 MEDPAY_REQUESTS_PER_KEY_PER_MINUTE=100000000 \
  CELCOIN_URL=http://127.0.0.1:$CELCOIN CELCOIN_WEBHOOK_PASSWORD=bench-hook RECEITA_URL=http://127.0.0.1:$RECEITA \
  DATABASE_URL="${DATABASE_URL:-sqlite://data/medpay.db}" "$BIN" serve > medpay.log 2>&1 &
MP=$!
for _ in $(seq 1 100); do curl -sf "localhost:$SERVER/healthz" >/dev/null && break; sleep 0.2; done
python3 "$SHARED/setup_medpay.py" "http://127.0.0.1:$SERVER" bench-admin "$PATIENTS" "$WORK/patients.txt"
rss() { awk '/VmRSS/{printf "%d MB", $2/1024}' "/proc/$1/status"; }
echo "after setup: server $(rss $MP)"
# A first short run measures the rate; the second runs for as long as the rest takes at it.
PAY_PATIENTS="$WORK/patients.txt" wrk -t1 -c64 -d10s -s "$SHARED/pay.lua" "http://127.0.0.1:$SERVER" > wrk1.txt
first=$(grep -o '[0-9]* requests in' wrk1.txt | awk '{print $1}')
rate=$(grep Requests/sec wrk1.txt | awk '{printf "%d", $2}')
left=$(( PAYMENTS > first ? PAYMENTS - first : 0 ))
seconds=$(( left / (rate > 0 ? rate : 1) + 1 ))
PAY_PATIENTS="$WORK/patients.txt" wrk -t1 -c64 -d"${seconds}"s --latency -s "$SHARED/pay.lua" "http://127.0.0.1:$SERVER" > wrk2.txt
second=$(grep -o '[0-9]* requests in' wrk2.txt | awk '{print $1}')
sleep 3
echo "$((first + second)) payments from $PATIENTS patients; last run $(grep Requests/sec wrk2.txt | awk '{print $2}') req/s, p99 $(awk '/ 99%/{print $2}' wrk2.txt), non-2xx $(cat wrk1.txt wrk2.txt | grep -o 'Non-2xx or 3xx responses: [0-9]*' | awk '{s+=$NF} END {print s+0}')"
echo "RSS: server $(rss $MP), Celcoin sandbox $(rss $CP), Receita sandbox $(rss $RP)"
