#!/usr/bin/env bash
# N appliance-only full copies with migrate-bench.sh (PROFILE wan|direct, default wan); prints
# per run the time, wire and patch bytes, and the phases that show where the time went.
# Usage: full-reps.sh [N]   Env: as migrate-bench.sh (DWCP, DWCP_LAB, MKCHANGE, DIR,
# SEND_ARGS), PROFILE. Needs root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${DIR:-/work/migrate-bench}"
for _ in $(seq "${1:-3}"); do
  line=$(TOOLS=dwcp "$here/migrate-bench.sh" "${PROFILE:-wan}" 1 full 2>/dev/null | tail -1)
  python3 - "$line" "$dir/logs/send-full-dwcp-1.json" <<'PY'
import json, sys
f = sys.argv[1].split()
d = json.load(open(sys.argv[2]))
p, pl, dp = d['phases'], d['pipeline'], d['dest_phases']
print(f"{float(f[4]):6.2f} s wire {int(f[5])/1e6:6.1f} MB patch {d['rounds'][0]['patch_bytes']/1e6:6.1f}"
      f" move {p['move']:5.2f} first {pl['first_part_s']:.2f} apply_wait {p['apply_wait']:.2f}"
      f" commit {p['commit_wait']:.2f} cache {p.get('cache_update', 0):.2f}"
      f" verify {dp.get('verify', 0):.2f} parts {pl['parts']} levels {pl['zstd_levels']}")
PY
done
