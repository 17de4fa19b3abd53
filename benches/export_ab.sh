#!/usr/bin/env bash
# Does MONGODB_URL cost payments? Two release servers at once on their own embedded SQLite: A
# without MONGODB_URL, B with it (nx-27017 from PyPI running under `chrt --idle 0`, its data on
# tmpfs) or, with BMODE=none, B without it too (the control: how far apart two equal servers come
# out), or with BMODE=down, B with it and nothing listening there (the triggers' cost alone).
# The same wrk load as ../shared/bench/compare.sh (64 connections, fresh keys, 5,000 patients
# each) goes to one server at a time in SLICE-second slices, in the order a b b a a b …, ROUNDS
# rounds: both servers see the same machine, so its drift (40 % between runs a minute apart here)
# falls out of the ratio. Compare B/A with MONGODB_URL to B/A of the control.
# usage: benches/export_ab.sh [path/to/medpay]   (env BMODE=up|none|down, SLICE=5, ROUNDS=12, NX_PYTHON)
set -euo pipefail
BIN=$(realpath "${1:-target/release/medpay}")
SHARED=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
SLICE=${SLICE:-5}; ROUNDS=${ROUNDS:-12}; BMODE=${BMODE:-up}
WORK=$(mktemp -d); NXDB=/dev/shm/medpay-export-ab-$$.sqlite
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if [ -z "${NX_PYTHON:-}" ]; then
  VENV=${XDG_CACHE_HOME:-$HOME/.cache}/medpay-nx-venv
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import nx_27017' 2>/dev/null \
    || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q nx-27017==0.8.1; }
  NX_PYTHON=$VENV/bin/python
fi
cd "$WORK"; mkdir a b
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$WORK" "$NXDB"*' EXIT
b_env=()
if [ "$BMODE" = up ]; then
  chrt --idle 0 "$NX_PYTHON" -m nx_27017.nx_27017 --host 127.0.0.1 -p 27558 --db "$NXDB" > nx.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/27558) 2>/dev/null && break; sleep 0.2; done
  b_env=(MONGODB_URL=mongodb://127.0.0.1:27558/medpay)
elif [ "$BMODE" = down ]; then
  # The triggers fill the outbox; nothing listens, so the export fails and backs off.
  b_env=(MONGODB_URL=mongodb://127.0.0.1:27559/medpay)
fi
common=(MEDPAY_ADMIN_TOKEN=bench-admin RUST_LOG=warn MEDPAY_SCORING_HOUR=14 MEDPAY_NOTIFY_POLL_MS=3600000
  MEDPAY_PAYMENTS_PER_PATIENT_PER_MINUTE=100000 MEDPAY_REQUESTS_PER_KEY_PER_MINUTE=100000000)
(cd a && exec env "${common[@]}" MEDPAY_BIND=127.0.0.1:18191 "$BIN" serve > ../a.log 2>&1) &
pids+=($!)
(cd b && exec env "${common[@]}" MEDPAY_BIND=127.0.0.1:18192 "${b_env[@]}" "$BIN" serve > ../b.log 2>&1) &
pids+=($!)
for port in 18191 18192; do
  for _ in $(seq 1 100); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.2; done
done
python3 "$SHARED/setup_medpay.py" http://127.0.0.1:18191 bench-admin 5000 "$WORK/a.txt" >/dev/null
python3 "$SHARED/setup_medpay.py" http://127.0.0.1:18192 bench-admin 5000 "$WORK/b.txt" >/dev/null
total_a=0; total_b=0
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for side in $order; do
    port=18191; [ "$side" = b ] && port=18192
    PAY_PATIENTS="$WORK/$side.txt" wrk -t1 -c64 -d"${SLICE}s" -s "$SHARED/pay.lua" "http://127.0.0.1:$port" > wrk.txt 2>&1
    n=$(grep -o '[0-9]* requests in' wrk.txt | awk '{print $1}')
    errors=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' wrk.txt | awk '{print $NF}' || true)
    echo "round $round $side: $n payments${errors:+, $errors not 2xx}"
    if [ "$side" = a ]; then total_a=$((total_a + n)); else total_b=$((total_b + n)); fi
  done
done
backlog=$(curl -s -H 'Authorization: Bearer bench-admin' localhost:18192/metrics | awk '/^medpay_log_export_backlog/{print $2}')
echo "B=$BMODE: A $total_a payments, B $total_b, B/A $(awk -v a="$total_a" -v b="$total_b" 'BEGIN{printf "%.3f", b/a}')${backlog:+, export backlog of B $backlog rows}"
