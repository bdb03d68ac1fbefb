#!/usr/bin/env bash
# Scale-out run on loopback: two gunicorn instances (2 sync workers each, gunicorn.conf.py; ports 5150/5151) and two Huey
# workers (Redis broker, db 5) sharing one PostgreSQL database (labsys_perf, filled by perf-data).
# 1. Scores synthetic 96-field potency plates through the job queue (one plate, then two at once).
# 2. Serves the web benchmark through one instance, then both (wrk connections split over the two hosts).
# Every process started here is stopped on exit (trap). The machine has 2 cores: a second
# instance adds no CPU, so expect no doubling.
#
#   benchmarks/scale_out.sh [duration_seconds] [users]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/work/main/.venv/bin/python}
BIN=$(dirname "$PY")
DURATION=${1:-30}
USERS=${2:-32}
export LABSYS_DATABASE_URL=${LABSYS_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/labsys_perf}
export LABSYS_INSTANCE_PATH=${LABSYS_INSTANCE_PATH:-/tmp/perf/vol/inst}
export LABSYS_HUEY_URL=${LABSYS_HUEY_URL:-redis://127.0.0.1:6379/5}
export LABSYS_LOGIN_RATE_LIMIT="10000 per minute"
LOGS=$(mktemp -d /tmp/scale-out-XXXX)
PIDS=()
exec > >(tee "$LOGS/scale_out.txt") 2>&1  # the figures are kept with the logs

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 2
  for pid in "${PIDS[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  echo "stopped ${#PIDS[@]} process groups; logs in $LOGS"
}
trap cleanup EXIT INT TERM

start() {  # start NAME CMD... in its own process group, remember its pid
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores)"
"$BIN/flask" --app wsgi db upgrade >/dev/null 2>&1
"$BIN/redis-cli" -n 5 ping >/dev/null 2>&1 || "$PY" -c "import redis; redis.Redis(db=5).ping()"
for port in 5150 5151; do
  start "gunicorn-$port" "$BIN/gunicorn" -c gunicorn.conf.py -w 2 -b "127.0.0.1:$port" --log-level warning wsgi:app
done
for n in 1 2; do
  start "huey-$n" "$BIN/flask" --app wsgi potency-jobs worker
done
for port in 5150 5151; do
  for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.5
  done
done
echo "two gunicorn instances (5150, 5151) and two Huey workers are up"

echo "== potency: one 96-field plate through the queue"
"$PY" benchmarks/scale_out_plate.py --plates 1
echo "== potency: two 96-field plates at once (one per Huey worker)"
"$PY" benchmarks/scale_out_plate.py --plates 2

if [ -n "${PLATES_ONLY:-}" ]; then exit 0; fi
echo "== web: one instance (5150)"
"$PY" benchmarks/web_bench.py --engine postgresql --postgresql-url "$LABSYS_DATABASE_URL" \
  --instance "$LABSYS_INSTANCE_PATH" --external --ports 5150 --users "$USERS" --duration "$DURATION" \
  --scenarios scan,pages,ceiling --json "$LOGS/one.json"
echo "== web: both instances (5150 + 5151, users split)"
"$PY" benchmarks/web_bench.py --engine postgresql --postgresql-url "$LABSYS_DATABASE_URL" \
  --instance "$LABSYS_INSTANCE_PATH" --external --ports 5150,5151 --users "$USERS" --duration "$DURATION" \
  --scenarios scan,pages,ceiling --json "$LOGS/two.json"
"$PY" - "$LOGS/one.json" "$LOGS/two.json" <<'PYEOF'
import json, sys
one, two = (json.load(open(p))["postgresql"] for p in sys.argv[1:3])
two = {r["name"]: r for r in two}
print(f"\n{'endpoint':<34} {'1 instance':>11} {'2 instances':>12} {'ratio':>6}")
for r in one:
    other = two.get(r["name"])
    if other:
        print(f"{r['name']:<34} {r['rps']:>9.1f}/s {other['rps']:>10.1f}/s {other['rps'] / r['rps']:>6.2f}")
PYEOF
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
