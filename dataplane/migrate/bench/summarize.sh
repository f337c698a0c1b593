#!/usr/bin/env bash
# Summarises migrate-bench.sh output lines (profile case tool rep secs wire data) into
# min / median / max of seconds and wire bytes per (profile, case, tool).
set -euo pipefail
grep -v '^#' "${1:-/dev/stdin}" | awk '$3 != "zstd-ref"' | sort -k1,1 -k2,2 -k3,3 -k5,5g | awk '
function flush() {
  if (n == 0) return
  # seconds sorted by the sort above; wire sorted here
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (w[j] < w[i]) { t = w[i]; w[i] = w[j]; w[j] = t }
  printf "%-7s %-8s %-14s n=%d  secs %.1f / %.1f / %.1f   wire MB %.1f / %.1f / %.1f\n", \
    key1, key2, key3, n, s[1], s[int((n + 1) / 2)], s[n], w[1] / 1e6, w[int((n + 1) / 2)] / 1e6, w[n] / 1e6
}
{ k = $1 " " $2 " " $3
  if (k != prev) { flush(); n = 0; prev = k; key1 = $1; key2 = $2; key3 = $3 }
  n++; s[n] = $5; w[n] = $6 }
END { flush() }'
