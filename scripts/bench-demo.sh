#!/usr/bin/env bash
# Datacenter-profile goodput, side by side in one run: the appliance (AF_XDP and UDP
# backends, `dwcp demo` over a veth pair between two namespaces), iperf3 TCP one stream
# (cubic and bbr, `dwcp-lab bench` over a veth pair built the same way) and the raw UDP
# GSO/GRO loop with no protocol work (`dwcp-certify measure loop --path udp-gso`), all at
# the same MTU. Repetitions alternate between the paths.
# Also `dwcp demo --workers 2` (the object in two parts, two workers per appliance).
# Usage: scripts/bench-demo.sh [REPS] [SIZE_MIB] [MTU]    (root; prints a Markdown table)
# Raw lines (one JSON report per dwcp run) go to $OUT (default target/bench-demo.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
SIZE=${2:-256}
MTU=${3:-1500}
T="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$T/bench-demo.jsonl}"
cargo build --release -q -p dwcp-engine --bin dwcp -p dwcp-bench --bin dwcp-lab --bin dwcp-certify
stats() { python3 -c 'import sys,statistics as s; v=sorted(float(x) for x in sys.argv[1:]); print(f"{v[0]:.2f} / {s.median(v):.2f} / {v[-1]:.2f}")' "$@"; }
med() { python3 -c 'import sys,statistics as s; print(f"{s.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
payload=$((MTU - 100))   # the io-bench sizes: 1400 B at MTU 1500, 8900 B at 9000
: > "$OUT"
declare -A vals cpu_s cpu_r
for rep in $(seq "$REPS"); do
  for b in afxdp udp udp2; do
    rm -f /dev/shm/object.src /dev/shm/object.dst*
    w=1; be=$b
    if [ "$b" = udp2 ]; then w=2; be=udp; fi
    j=$("$T"/release/dwcp --json demo --size-mib "$SIZE" --backend "$be" --workers "$w" --mtu "$MTU" --dir /dev/shm 2>/dev/null)
    echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); d["bench"]=sys.argv[1]; print(json.dumps(d))' "$b" >> "$OUT"
    read -r g cs cr < <(echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["send"]["goodput_gbit_s"], d["send"]["cpu_ns_per_byte"], d["recv"]["cpu_ns_per_byte"])')
    vals[$b]+="$g "; cpu_s[$b]+="$cs "; cpu_r[$b]+="$cr "
    echo "rep $rep dwcp $b: $g Gbit/s, worker CPU $cs / $cr ns/B (send / recv)" >&2
  done
  g=$("$T"/release/dwcp-certify measure loop --path udp-gso --payload "$payload" --mtu "$MTU" --secs 3 |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["gbps"])')
  vals[gso]+="$g "
  echo "rep $rep raw UDP GSO/GRO loop ($payload B): $g Gbit/s" >&2
done
tcp=()
for cc in cubic bbr; do
  line=$("$T"/release/dwcp-lab bench --profile direct --mtu "$MTU" --cc "$cc" --reps "$REPS" --secs 5 2>&1 | tee /dev/stderr | grep -E "^ *$cc:" | tail -1 | sed -E 's/^ *[a-z]+: *//; s/ *samples.*//')
  tcp+=("$cc | $line")
done
best=$(python3 -c 'import sys,statistics as s; print(max(s.median(float(x) for x in a.split()) for a in sys.argv[1:]))' "${vals[afxdp]}" "${vals[udp]}" "${vals[udp2]}")
echo
echo "| path (veth, MTU ${MTU}, ${SIZE} MiB object, ${REPS} reps) | goodput Gbit/s min / median / max | worker CPU ns/B send / recv (median) |"
echo "|---|---|---|"
echo "| dwcp v3, AF_XDP backend | $(stats ${vals[afxdp]}) | $(med ${cpu_s[afxdp]}) / $(med ${cpu_r[afxdp]}) |"
echo "| dwcp v3, UDP backend (GSO/GRO) | $(stats ${vals[udp]}) | $(med ${cpu_s[udp]}) / $(med ${cpu_r[udp]}) |"
echo "| dwcp v3, UDP backend, 2 parts on 2 workers per side | $(stats ${vals[udp2]}) | $(med ${cpu_s[udp2]}) / $(med ${cpu_r[udp2]}) (all workers) |"
echo "| raw UDP GSO/GRO loop, ${payload} B datagrams, no protocol work | $(stats ${vals[gso]}) | |"
for l in "${tcp[@]}"; do echo "| iperf3 TCP one stream, ${l%% |*} | ${l#* | } | |"; done
echo
echo "best dwcp backend (median): $best Gbit/s; ratio to the raw GSO loop: $(python3 -c 'import sys,statistics as s; print(f"{float(sys.argv[1])/s.median(float(x) for x in sys.argv[2].split()):.2f}")' "$best" "${vals[gso]}")"
