#!/usr/bin/env bash
# What PostgreSQL itself costs per request on this machine, for MedPay and for the minimal Python
# peer, in one run: each is driven by ../shared/bench/pay.lua (64 connections, fresh
# Idempotency-Key, 5,000 patients) against its own fresh database, and beside each one's throughput
# this prints the CPU its PostgreSQL backends used per request (utime+stime of every `postgres`
# process, end minus start; a backend that exits mid-run is not counted) and the app's own CPU per
# request. It tells whether a throughput target is within reach of the machine's cores when the
# database shares them: requests/s ≤ cores / (app CPU + PostgreSQL CPU per request).
# usage: benches/pg_floor.sh [seconds] [path/to/medpay]   (PG at 127.0.0.1:5432, user postgres)
set -euo pipefail
SECONDS_RUN=${1:-20}
BIN=$(realpath "${2:-target/release/medpay}")
SHARED=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
VENV=${MEDPAY_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/medpay-bench-venv}
WORK=$(mktemp -d)
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -x "$VENV/bin/uvicorn" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q fastapi uvicorn scikit-learn asyncpg uvloop httptools; }
TICK=$(getconf CLK_TCK)

# utime+stime of each postgres process, "pid ticks" per line.
pg_ticks() { for pid in $(pgrep -x postgres); do awk -v p="$pid" '{print p, $14+$15}' "/proc/$pid/stat" 2>/dev/null || true; done; }
# Ticks spent by postgres processes between two snapshots (new processes from zero).
pg_spent() { awk 'NR==FNR {before[$1]=$2; next} {spent += $2 - ($1 in before ? before[$1] : 0)} END {print spent+0}' "$1" "$2"; }
# Ticks of a process and its children still alive (uvicorn's workers).
tree_ticks() { local total=0; for pid in "$@" $(pgrep -P "$1" 2>/dev/null || true); do total=$((total + $(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo "$total"; }
report() { # name, wrk file, app ticks, pg ticks
  local n; n=$(grep -o '[0-9]* requests in' "$2" | awk '{print $1}')
  echo "$1: $(grep Requests/sec "$2" | awk '{print $2}') req/s, p99 $(awk '/ 99%/{print $2}' "$2"), non-2xx $(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$2" | awk '{print $NF}'); per request: app $(awk -v c="$3" -v n="$n" -v t="$TICK" 'BEGIN{printf "%.2f", c*1000/t/n}') ms CPU, PostgreSQL $(awk -v c="$4" -v n="$n" -v t="$TICK" 'BEGIN{printf "%.2f", c*1000/t/n}') ms CPU"
}
cd "$WORK"

psql -h 127.0.0.1 -U postgres -q -c "drop database if exists medpay_floor" -c "create database medpay_floor" >/dev/null
MEDPAY_BIND=127.0.0.1:18181 MEDPAY_ADMIN_TOKEN=bench-admin RUST_LOG=warn MEDPAY_SCORING_HOUR=14 \
  MEDPAY_PAYMENTS_PER_PATIENT_PER_MINUTE=1000 MEDPAY_REQUESTS_PER_KEY_PER_MINUTE=100000000 \
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/medpay_floor "$BIN" serve > medpay.log 2>&1 &
MP=$!
trap 'kill $MP 2>/dev/null || true; kill ${PP:-} 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf localhost:18181/healthz >/dev/null && break; sleep 0.2; done
python3 "$SHARED/setup_medpay.py" http://127.0.0.1:18181 bench-admin 5000 "$WORK/patients.txt"
pg_ticks > pg0; a0=$(tree_ticks $MP)
PAY_PATIENTS="$WORK/patients.txt" wrk -t1 -c64 -d"${SECONDS_RUN}"s --latency -s "$SHARED/pay.lua" http://127.0.0.1:18181 > medpay.txt
pg_ticks > pg1; a1=$(tree_ticks $MP)
kill $MP; wait $MP 2>/dev/null || true

psql -h 127.0.0.1 -U postgres -q -c "drop database if exists payanchor" -c "create database payanchor" >/dev/null
(cd "$SHARED" && PAY_DSN=postgresql://postgres@127.0.0.1:5432/payanchor exec "$VENV/bin/uvicorn" pay_app:app --host 127.0.0.1 \
  --port 18383 --workers 2 --loop uvloop --http httptools --log-level warning --no-access-log) > peer.log 2>&1 &
PP=$!
for _ in $(seq 1 150); do (exec 3<>/dev/tcp/127.0.0.1/18383) 2>/dev/null && break; sleep 0.2; done
sleep 1
PAY_PATIENTS="$WORK/patients.txt" wrk -t1 -c64 -d3s -s "$SHARED/pay.lua" http://127.0.0.1:18383 > /dev/null
pg_ticks > pg2; b0=$(tree_ticks $PP)
PAY_PATIENTS="$WORK/patients.txt" wrk -t1 -c64 -d"${SECONDS_RUN}"s --latency -s "$SHARED/pay.lua" http://127.0.0.1:18383 > peer.txt
pg_ticks > pg3; b1=$(tree_ticks $PP)
kill $PP; wait $PP 2>/dev/null || true

report "medpay (PostgreSQL)" medpay.txt $((a1 - a0)) "$(pg_spent pg0 pg1)"
report "peer" peer.txt $((b1 - b0)) "$(pg_spent pg2 pg3)"
echo "rows per request: medpay $(psql -h 127.0.0.1 -U postgres -d medpay_floor -tAc "select sum(n_tup_ins + n_tup_upd + n_tup_del) from pg_stat_user_tables") over $(grep -o '[0-9]* requests in' medpay.txt | awk '{print $1}') payments (setup included), peer $(psql -h 127.0.0.1 -U postgres -d payanchor -tAc "select sum(n_tup_ins + n_tup_upd + n_tup_del) from pg_stat_user_tables") over $(grep -o '[0-9]* requests in' peer.txt | awk '{print $1}') (warm-up included)"
