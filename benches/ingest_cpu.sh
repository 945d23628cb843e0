#!/usr/bin/env bash
# Whole ingest path over OTLP/gRPC: the daemon's CPU seconds per million
# spans under `release-verdict loadgen` flat out, and its peak RSS.
#
#   cargo build --release && bash benches/ingest_cpu.sh [seconds] [grpc|http]
set -euo pipefail
secs="${1:-15}"
proto="${2:-grpc}"
bin="$(dirname "$0")/../target/release/release-verdict"
log="$(mktemp)"
"$bin" serve --config "$(dirname "$0")/../config.toml" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "listening" "$log" && break; sleep 0.1; done
grpc=$(sed -n 's/.*grpc_addr=\([^ ]*\).*/\1/p' "$log")
http=$(sed -n 's/.*http_addr=\([^ ]*\).*/\1/p' "$log")
target="grpc://$grpc"; [ "$proto" = http ] && target="http://$http"
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }
before=$(cpu)
"$bin" loadgen --target "$target" --rate 0 --duration "${secs}s" --services 8 --concurrency 4 | tee /dev/stderr >"$log.out"
after=$(cpu)
accepted=$(sed -n 's/.*accepted \([0-9]*\).*/\1/p' "$log.out")
awk -v a="$accepted" -v b="$before" -v c="$after" 'BEGIN {
  printf "daemon: %.2f CPU-s for %d spans = %.2f CPU-s per million spans (%.0f spans per CPU-second)\n", c - b, a, (c - b) / a * 1e6, a / (c - b) }'
grep VmHWM "/proc/$pid/status"
curl -s "http://$http/api/v1/releases" | python3 -c 'import json,sys; r=json.load(sys.stdin)["releases"]; print(len(r), "releases:", sorted(set(v["verdict"] for v in r)))'
rm -f "$log.out"
