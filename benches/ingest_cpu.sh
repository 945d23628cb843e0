#!/usr/bin/env bash
# Whole ingest path over OTLP/gRPC: the daemon's CPU seconds per million
# spans under `release-verdict loadgen` flat out, and its peak RSS.
#
#   cargo build --release && bash benches/ingest_cpu.sh [seconds] [grpc|http] [ledger-on|ledger-off|ledger-postgres]
#   PAYLOAD=http bash benches/ingest_cpu.sh 15 grpc   # realistic ~360-byte HTTP server spans
#
# PAYLOAD (`small`, the default, or `http`) is loadgen's --payload; the
# criterion rows `loadgen http/*` decode the same requests as `http` sends,
# for the bare-decode figure to set beside this one.
#
# The daemon runs on config.toml in a temporary directory, so its ledger
# (ledger-on, the default) is a fresh file there; ledger-off empties
# [ledger] path; ledger-postgres sets [ledger] url to $LEDGER_URL, or to a
# fresh database on a PostgreSQL this script starts (tests/setup's venv and
# tests/python/postgres_server.py, as the tests do).
set -euo pipefail
secs="${1:-15}"
proto="${2:-grpc}"
ledger="${3:-ledger-on}"
payload="${PAYLOAD:-small}"
bin="${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/release-verdict}"
work="$(mktemp -d)"
log="$work/log"
config="$work/config.toml"
cp "$(dirname "$0")/../config.toml" "$config"
[ "$ledger" = ledger-off ] && sed -i 's|^path = "data/ledger.db"|path = ""|' "$config"
pg=""
if [ "$ledger" = ledger-postgres ] && [ -z "${LEDGER_URL:-}" ]; then
    root="$(cd "$(dirname "$0")/.." && pwd)"
    fifo="$work/pg"; mkfifo "$fifo"
    # Prints the URL, then holds the server until its standard input closes.
    "$root/.venv/bin/python" -c '
import sys, tempfile; sys.path.insert(0, sys.argv[1])
from pathlib import Path
from postgres_server import PostgresServer
s = PostgresServer(Path(tempfile.mkdtemp(prefix="rv-postgres-")))
print(s.database("ingest"), flush=True); sys.stdin.read(); s.stop()' "$root/tests/python" <"$fifo" >"$work/pg.url" &
    pg=$!
    exec 9>"$fifo"
    for _ in $(seq 600); do [ -s "$work/pg.url" ] && break; sleep 0.1; done
    LEDGER_URL="$(cat "$work/pg.url")"
fi
[ "$ledger" = ledger-postgres ] && sed -i "s|^path = \"data/ledger.db\"|url = \"$LEDGER_URL\"|" "$config"
(cd "$work" && exec "$bin" serve --config "$config" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 2>"$log") &
pid=$!
trap 'kill $pid 2>/dev/null || true; exec 9>&-; [ -n "$pg" ] && wait "$pg"; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "listening" "$log" && break; sleep 0.1; done
grpc=$(sed -n 's/.*grpc_addr=\([^ ]*\).*/\1/p' "$log")
http=$(sed -n 's/.*http_addr=\([^ ]*\).*/\1/p' "$log")
target="grpc://$grpc"; [ "$proto" = http ] && target="http://$http"
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }
before=$(cpu)
"$bin" loadgen --target "$target" --rate 0 --duration "${secs}s" --services 8 --concurrency 4 --payload "$payload" | tee /dev/stderr >"$log.out"
after=$(cpu)
accepted=$(sed -n 's/.*accepted \([0-9]*\).*/\1/p' "$log.out")
awk -v a="$accepted" -v b="$before" -v c="$after" 'BEGIN {
  printf "daemon (payload '"$payload"'): %.2f CPU-s for %d spans = %.2f CPU-s per million spans (%.0f spans per CPU-second)\n", c - b, a, (c - b) / a * 1e6, a / (c - b) }'
grep VmHWM "/proc/$pid/status"
curl -s "http://$http/api/v1/releases" | python3 -c 'import json,sys; r=json.load(sys.stdin)["releases"]; print(len(r), "releases:", sorted(set(v["verdict"] for v in r)))'
[ "$ledger" != ledger-off ] && echo "ledger: $(curl -s "http://$http/metrics" | grep '^release_verdict_ledger_events_written ' )"
rm -f "$log.out"
