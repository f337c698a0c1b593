#!/usr/bin/env bash
# Bulk throughput of the stream carrier against one object on the WAN lab
# (docs/perf-migrate.md): a file sent by `dwcp send` ("object") or by
# `dwcp stream-send --codec raw` with S KiB segments, N in flight ("SxN"), received and compared byte for byte. One lab for all configs; prints one
# line per config and the emulator's counters at the end.
# Usage: F=FILE stream-bulk.sh CONFIG...   (e.g. object 4096x4 768x8)
# Env: T (binaries, default target/release), SLOG (RUST_LOG of the sender), SENV (extra
#      environment of the sender, NAME=VALUE). Needs root (namespaces).
set -euo pipefail
T="${T:-target/release}"
F="${F:?F=file to send}"
work=$(mktemp -d)
L="$work/lab.out"
. "$(dirname "$0")/lab.sh"
trap 'lab_down; tail -3 "$L"; rm -rf "$work"' EXIT
lab_up "$T/dwcp-lab" "$L" "${WAN_LAB[@]}"
na=$ns_a nb=$ns_b ia=$ip_a ib=$ip_b
port=7600
for cfg in "$@"; do
  port=$((port + 2))
  out="$work/out.bin"
  if [[ $cfg == object ]]; then
    ip netns exec "$nb" "$T/dwcp" recv --iface veth-b --local "$ib:$port" --peer "$ia:$port" --core 1 "$out" >/dev/null 2>"$work/r.err" &
    rp=$!; sleep 0.3; t0=$(date +%s.%N)
    ip netns exec "$na" "$T/dwcp" send --iface veth-a --local "$ia:$port" --peer "$ib:$port" --core 0 "$F" >/dev/null 2>"$work/s.err"
    t1=$(date +%s.%N); wait "$rp"
  else
    c=$cfg
    seg=${c%x*}; inf=${c#*x}
    ip netns exec "$nb" "$T/dwcp" stream-recv --iface veth-b --local "$ib:$port" --peer "$ia:$port" --core 1 \
      --segment-kib "$seg" --in-flight "$inf" --codec raw >"$out" 2>"$work/r.err" &
    rp=$!; sleep 0.3; t0=$(date +%s.%N)
    ip netns exec "$na" env ${SENV:-DWCP_BENCH=1} RUST_LOG="${SLOG:-warn}" "$T/dwcp" stream-send --iface veth-a \
      --local "$ia:$port" --peer "$ib:$port" --core 0 --segment-kib "$seg" --in-flight "$inf" --codec raw <"$F" 2>"$work/s.err"
    wait "$rp"; t1=$(date +%s.%N)
  fi
  cmp -s "$F" "$out" && ok=ok || ok=DIFF
  echo "$cfg $(echo "$t1 - $t0" | bc) s $ok $(( $(stat -c %s "$F") * 8 / 1000000 )) Mbit"
done
