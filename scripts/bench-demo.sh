#!/usr/bin/env bash
# Datacenter-profile goodput, side by side in one run: the appliance (AF_XDP and UDP
# backends, `dwcp demo` over a veth pair between two namespaces, MTU 1500) and iperf3 TCP
# (cubic, one stream) over a veth pair built the same way by `dwcp-lab bench`.
# Usage: scripts/bench-demo.sh [REPS] [SIZE_MIB]     (root; prints a Markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
SIZE=${2:-256}
cargo build --release -q -p dwcp-engine --bin dwcp -p dwcp-bench --bin dwcp-lab
stats() { python3 -c 'import sys,statistics as s; v=sorted(float(x) for x in sys.argv[1:]); print(f"{v[0]:.2f} / {s.median(v):.2f} / {v[-1]:.2f}")' "$@"; }
declare -A res
for b in afxdp udp; do
  vals=()
  for _ in $(seq "$REPS"); do
    g=$("${CARGO_TARGET_DIR:-target}"/release/dwcp --json demo --size-mib "$SIZE" --backend "$b" --dir /dev/shm 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["send"]["goodput_gbit_s"])')
    vals+=("$g")
  done
  res[$b]=$(stats "${vals[@]}")
  echo "dwcp $b: ${vals[*]}" >&2
done
echo "iperf3:" >&2
"${CARGO_TARGET_DIR:-target}"/release/dwcp-lab bench --profile direct --reps "$REPS" --secs 5 >&2
echo
echo "| path (veth, MTU 1500, ${SIZE} MiB object) | goodput Gbit/s min / median / max |"
echo "|---|---|"
echo "| dwcp v3, AF_XDP backend | ${res[afxdp]} |"
echo "| dwcp v3, UDP backend (GSO/GRO) | ${res[udp]} |"
