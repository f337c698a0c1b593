#!/usr/bin/env bash
# Sealed vs unsealed goodput of `dwcp send/recv` over a veth pair between two network
# namespaces (root needed), side by side in one run, N repetitions each, alternating.
# Usage: bench-sealed.sh [SIZE_MIB=256] [REPS=3] [BACKEND=udp]
# Prints one line per run and min/median/max per variant (Gbit/s of object bytes).
set -euo pipefail
SIZE=${1:-256}; REPS=${2:-3}; BACKEND=${3:-udp}
DWCP=${DWCP:-${CARGO_TARGET_DIR:-target}/release/dwcp}
W=$(mktemp -d); A=dwsec-a-$$; B=dwsec-b-$$
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip -n "$A" link add veth-a type veth peer name veth-b netns "$B"
ip -n "$A" addr add 10.78.0.1/24 dev veth-a; ip -n "$B" addr add 10.78.0.2/24 dev veth-b
ip -n "$A" link set veth-a up; ip -n "$B" link set veth-b up
ip -n "$A" link set lo up; ip -n "$B" link set lo up
head -c $((SIZE << 20)) /dev/urandom > "$W/obj"
"$DWCP" keygen --out "$W/s.key" >/dev/null; "$DWCP" keygen --out "$W/r.key" >/dev/null
run() { # $1 = label, rest = key flags for send; receiver flags derived
  local label=$1 skeys=() rkeys=()
  if [ "$label" != plain ]; then
    skeys=(--key "$W/s.key" --peer-pub "$W/r.key.pub" --suite "$label")
    rkeys=(--key "$W/r.key" --peer-pub "$W/s.key.pub" --suite "$label")
  fi
  rm -f "$W/out" "$W"/out.*
  ip netns exec "$B" "$DWCP" --json recv --iface veth-b --backend "$BACKEND" --core 1 --timeout 120 \
    --local 10.78.0.2:7470 --peer 10.78.0.1:7470 "${rkeys[@]}" "$W/out" > "$W/recv.json" &
  local rpid=$!; sleep 0.3
  ip netns exec "$A" "$DWCP" --json send --iface veth-a --backend "$BACKEND" --core 0 --timeout 120 \
    --local 10.78.0.1:7470 --peer 10.78.0.2:7470 "${skeys[@]}" "$W/obj" > "$W/send.json"
  wait "$rpid"
  cmp -s "$W/obj" "$W/out" || { echo "$label: output differs" >&2; exit 1; }
  python3 -c "import json,sys; s=json.load(open('$W/send.json')); print('$label', round(s['goodput_gbit_s'],3), s['security']['sealed'])"
}
for i in $(seq "$REPS"); do for v in plain aes128gcm chacha20poly1305; do run "$v"; done; done | tee "$W/all"
python3 - "$W/all" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
for v in ["plain", "aes128gcm", "chacha20poly1305"]:
    xs = sorted(float(r[1]) for r in rows if r[0] == v)
    print(f"{v:18s} min {xs[0]:.3f} median {statistics.median(xs):.3f} max {xs[-1]:.3f} Gbit/s (n={len(xs)})")
PY
