#!/usr/bin/env bash
# Load test of the control API with wrk: GET /readyz and GET /v1/flags/{name}.
# Starts dwcp-control on a temporary state dir and region, with the fake dataplane example so
# /readyz answers 200. Target (docs/api.md): p99 <= 1 ms at >= 20k req/s.
# Usage: scripts/api-load.sh [seconds=5] [connections=32]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-32}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p dwcp-control --bin dwcp-control --example fake_dataplane
bin=$CARGO_TARGET_DIR/release
tmp=$(mktemp -d)
cleanup() { kill "${srv:-}" "${dp:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"$bin/dwcp-control" --listen 127.0.0.1:0 --state-dir "$tmp/state" --shm-path "$tmp/region" \
  >"$tmp/out" 2>"$tmp/err" &
srv=$!
for _ in $(seq 100); do grep -q "listening on" "$tmp/out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$tmp/out")
"$bin/examples/fake_dataplane" "$tmp/region" &
dp=$!
token=$(cat "$tmp/state/token")
curl -sf -X PUT "http://$addr/v1/flags/load.test" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"kind":"percent","enabled":true,"percent":10}' >/dev/null
for _ in $(seq 50); do [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz") == 200 ]] && break; sleep 0.1; done
for path in /readyz /v1/flags/load.test; do
  echo "=== GET $path (wrk -t2 -c$conns -d${secs}s --latency)"
  wrk -t2 -c"$conns" -d"${secs}s" --latency "http://$addr$path" | grep -E "Requests/sec|Latency  |50%|90%|99%|Non-2xx"
done
