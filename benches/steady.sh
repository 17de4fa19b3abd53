#!/usr/bin/env bash
# Steady-state load on the release binary: the same wrk script and setup as ../shared/bench/compare.sh
# (64 connections, fresh Idempotency-Key per request, 5,000 patients of one provider, payments
# charged at the in-process Celcoin sandbox before the answer), for longer, so that the first pass
# over the patients (their sessions start, Receita is asked once per CPF) weighs less.
# Prints throughput, latency, the server's CPU and bytes written per payment, and its RSS.
# usage: benches/steady.sh [seconds] [path/to/medpay]   (DATABASE_URL picks PostgreSQL; PATIENTS, default 5000)
set -euo pipefail
SECONDS_RUN=${1:-60}
BIN=$(realpath "${2:-target/release/medpay}")
SHARED=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
WORK=$(mktemp -d)
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cd "$WORK"
MEDPAY_BIND=127.0.0.1:18181 MEDPAY_ADMIN_TOKEN=bench-admin RUST_LOG=warn MEDPAY_SCORING_HOUR=14 \
  MEDPAY_PAYMENTS_PER_PATIENT_PER_MINUTE=1000 MEDPAY_REQUESTS_PER_KEY_PER_MINUTE=100000000 DATABASE_URL="${DATABASE_URL:-sqlite://data/medpay.db}" \
  "$BIN" serve > medpay.log 2>&1 &
MP=$!
trap 'kill $MP 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf localhost:18181/healthz >/dev/null && break; sleep 0.2; done
python3 "$SHARED/setup_medpay.py" http://127.0.0.1:18181 bench-admin "${PATIENTS:-5000}" "$WORK/patients.txt"
c0=$(awk '{print $14+$15}' /proc/$MP/stat); w0=$(awk '$1=="write_bytes:"{print $2}' /proc/$MP/io)
PAY_PATIENTS="$WORK/patients.txt" wrk -t1 -c64 -d"${SECONDS_RUN}"s --latency -s "$SHARED/pay.lua" http://127.0.0.1:18181 > wrk.txt
c1=$(awk '{print $14+$15}' /proc/$MP/stat); w1=$(awk '$1=="write_bytes:"{print $2}' /proc/$MP/io)
n=$(grep -o '[0-9]* requests in' wrk.txt | awk '{print $1}')
echo "$n payments in ${SECONDS_RUN} s: $(grep Requests/sec wrk.txt | awk '{print $2}') req/s, p50 $(awk '/ 50%/{print $2}' wrk.txt), p99 $(awk '/ 99%/{print $2}' wrk.txt), non-2xx $(grep -o 'Non-2xx or 3xx responses: [0-9]*' wrk.txt | awk '{print $NF}')"
echo "server: $(awk -v c=$((c1-c0)) -v n="$n" 'BEGIN{printf "%.2f ms CPU", c*10/n}') and $(awk -v b=$((w1-w0)) -v n="$n" 'BEGIN{printf "%.1f KB written", b/n/1024}') per payment, RSS $(awk '/VmRSS/{printf "%d MB", $2/1024}' /proc/$MP/status)"
