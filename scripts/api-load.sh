#!/usr/bin/env bash
# Load test of the control API: GET /readyz and GET /v1/flags/{name}.
# Starts dwcp-control on a temporary state dir and region, with the fake dataplane example so
# /readyz answers 200. Target (issue 5, docs/perf-control.md): p99 <= 1 ms at >= 20k req/s.
#
# Usage: scripts/api-load.sh [seconds=5] [connections=32] [rate=0]
#   rate=0  wrk closed loop: every connection sends its next request as soon as the answer
#           arrives (saturation throughput; latency includes queueing at saturation).
#   rate=R  wrk paced: each connection waits connections*1000/R ms between requests (wrk's
#           delay() hook, whole milliseconds), so the offered load is at most R req/s; and, when
#           `oha` is installed (cargo install oha), an open-loop run at exactly R req/s with
#           latency correction (no coordinated omission).
# Env: CONTROL_THREADS=N sets the server's tokio worker threads (DWCP_CONTROL_THREADS).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-32}
rate=${3:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
bin=$CARGO_TARGET_DIR/release
if [[ ! -x $bin/dwcp-control || ! -x $bin/examples/fake_dataplane ]]; then
  cargo build -q --release -p dwcp-control --bin dwcp-control --example fake_dataplane
fi
tmp=$(mktemp -d)
cleanup() { kill "${srv:-}" "${dp:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
DWCP_CONTROL_THREADS=${CONTROL_THREADS:-} "$bin/dwcp-control" --listen 127.0.0.1:0 \
  --state-dir "$tmp/state" --shm-path "$tmp/region" >"$tmp/out" 2>"$tmp/err" &
srv=$!
for _ in $(seq 100); do grep -q "listening on" "$tmp/out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$tmp/out")
"$bin/examples/fake_dataplane" "$tmp/region" &
dp=$!
token=$(cat "$tmp/state/token")
curl -sf -X PUT "http://$addr/v1/flags/load.test" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"kind":"percent","enabled":true,"percent":10}' >/dev/null
for _ in $(seq 50); do [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz") == 200 ]] && break; sleep 0.1; done
pace=()
if ((rate > 0)); then
  delay=$(( (conns * 1000 + rate - 1) / rate ))
  printf 'local d = %d\nfunction delay() return d end\n' "$delay" >"$tmp/pace.lua"
  pace=(-s "$tmp/pace.lua")
fi
for path in /readyz /v1/flags/load.test; do
  echo "=== GET $path (wrk -t2 -c$conns -d${secs}s --latency${pace:+, paced ${delay} ms per connection})"
  wrk -t2 -c"$conns" -d"${secs}s" --latency "${pace[@]}" "http://$addr$path" |
    grep -E "Requests/sec|Latency  |50%|75%|90%|99%|Non-2xx|errors"
  if ((rate > 0)) && command -v oha >/dev/null; then
    echo "=== GET $path (oha -q $rate -c$conns -z ${secs}s --latency-correction)"
    oha --no-tui -q "$rate" -c "$conns" -z "${secs}s" --latency-correction "http://$addr$path" |
      grep -E "Requests/sec|Slowest|Fastest|Average|50(\.00)?% in|90(\.00)?% in|99(\.00)?% in|99\.90% in|\[200\]|\[5"
  fi
done
