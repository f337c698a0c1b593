#!/bin/sh
# Side-by-side datagram benchmark on the lab's veth pair (as root): the dataplane's AF_XDP
# port with DWCP framing + CRC32C (dwcp-frames) vs bare AF_XDP (bare-afxdp) vs UDP
# sendmmsg/recvmmsg (udp-mmsg) and UDP with GSO/GRO (udp-gso); 64 B and 1400 B payloads on
# MTU 1500, 8000 B on MTU 9000. Every point is one `dwcp-certify measure loop` in a fresh
# lab (the loops live in bench-harness/src/loops.rs); repetitions alternate between paths.
# Environment: IO_BENCH_SECS (3), IO_BENCH_REPS (5), IO_BENCH_PATHS, IO_BENCH_SIZES
# ("payload:mtu ..."), DWCP_CERTIFY (default: build it and use target/release/dwcp-certify).
# Output: one JSON line per run in $OUT (default target/io-bench.jsonl), then a
# min/median/max table on stdout.
set -eu
cd "$(dirname "$0")/../.."
TARGET="${CARGO_TARGET_DIR:-target}"
SECS="${IO_BENCH_SECS:-3}"
REPS="${IO_BENCH_REPS:-5}"
PATHS="${IO_BENCH_PATHS:-dwcp-frames bare-afxdp udp-mmsg udp-gso}"
SIZES="${IO_BENCH_SIZES:-64:1500 1400:1500 8000:9000}"
OUT="${OUT:-$TARGET/io-bench.jsonl}"
if [ -z "${DWCP_CERTIFY:-}" ]; then
  cargo build --release -p dwcp-bench --bin dwcp-certify >&2
  DWCP_CERTIFY="$TARGET/release/dwcp-certify"
fi
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cpus, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# command: IO_BENCH_SECS=$SECS IO_BENCH_REPS=$REPS $0"
: > "$OUT"
for sz in $SIZES; do
  payload=${sz%%:*}
  mtu=${sz##*:}
  rep=1
  while [ "$rep" -le "$REPS" ]; do
    for p in $PATHS; do
      "$DWCP_CERTIFY" measure loop --path "$p" --payload "$payload" --mtu "$mtu" --secs "$SECS" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); d["path"]=sys.argv[1]; d["payload"]=int(sys.argv[2]); print(json.dumps(d))' "$p" "$payload" >> "$OUT"
    done
    rep=$((rep + 1))
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows.setdefault((d["payload"], d["path"]), []).append(d)
print(f"{'payload':>7} {'path':<12} {'kpps min/med/max':>24} {'Gbit/s median':>14} {'CPU s/GB':>9} {'loss':>7}")
for (payload, path), runs in rows.items():
    k = sorted(r["pps"] / 1e3 for r in runs)
    g = statistics.median(r["gbps"] for r in runs)
    c = [r["cpu_s_per_gb"] for r in runs if r["cpu_s_per_gb"] is not None]
    loss = statistics.median(r["loss"] for r in runs)
    cs = f"{statistics.median(c):.2f}" if c else "-"
    print(f"{payload:>7} {path:<12} {k[0]:>7.0f} /{statistics.median(k):>7.0f} /{k[-1]:>7.0f} {g:>14.2f} {cs:>9} {loss:>7.3f}")
med = {key: statistics.median(r["pps"] for r in runs) for key, runs in rows.items()}
for (payload, path), v in med.items():
    if path == "dwcp-frames":
        for other in ("bare-afxdp", "udp-mmsg", "udp-gso"):
            if (payload, other) in med and med[(payload, other)] > 0:
                print(f"ratio dwcp-frames/{other} at {payload} B (median rx pps): {v / med[(payload, other)]:.2f}")
PY
