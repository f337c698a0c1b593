#!/bin/sh
# Runs the side-by-side datagram benchmark (dataplane/engine/benches/io.rs) as root:
# dwcp (AF_XDP + DWCP framing + CRC32C) vs bare AF_XDP vs UDP sendmmsg/recvmmsg (with and
# without GSO/GRO), 64 B / 1400 B payloads on MTU 1500 and 8000 B on MTU 9000 (multi-buffer).
# Environment: DWCP_BENCH_SECS (3), DWCP_BENCH_REPS (5), DWCP_BENCH_SIZES, DWCP_BENCH_PATHS.
# Output: a table on stdout; also written to $OUT (default target/io-bench.txt).
set -eu
cd "$(dirname "$0")/../../.."
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$TARGET/io-bench.txt}"
cargo bench -p dwcp-engine --bench io --no-run
BIN=$(ls -t "$TARGET"/release/deps/io-* | grep -v '\.d$' | head -1)
{
  echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cpus, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# command: DWCP_BENCH_SECS=${DWCP_BENCH_SECS:-3} DWCP_BENCH_REPS=${DWCP_BENCH_REPS:-5} $0"
  "$BIN" --bench
} | tee "$OUT"
