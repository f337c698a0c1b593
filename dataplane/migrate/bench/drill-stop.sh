#!/usr/bin/env bash
# Failure drill (docs/migration.md, "Resumed streams"): a full copy over the WAN lab whose
# destination appliance is frozen (SIGSTOP) for STOP_S seconds, AT_S seconds into the job.
# The source's stream fails (its segments get no answer), and once the destination runs
# again the round's stream is resumed from its first missing part; the image must arrive
# exactly. Prints the elapsed time, the comparison, the pipeline report and the warnings.
# Env: DWCP, DWCP_LAB (binaries), DIR (work dir, default /work/migrate-bench), SRC_IMG
# (default $DIR/img/image-v1.ext4 from scripts/make-test-image.sh), AT_S (default 4),
# STOP_S (default 12). Needs root.
set -euo pipefail
t="${CARGO_TARGET_DIR:-target}"
dwcp="${DWCP:-$t/release/dwcp}"
lab_bin="${DWCP_LAB:-$t/release/dwcp-lab}"
dir="${DIR:-/work/migrate-bench}"
src="${SRC_IMG:-$dir/img/image-v1.ext4}"
for f in "$dwcp" "$lab_bin" "$src"; do [[ -e $f ]] || { echo "missing $f" >&2; exit 1; }; done
w="$dir/drill"
mkdir -p "$w"
. "$(dirname "$0")/lab.sh"
trap lab_down EXIT
lab_up "$lab_bin" "$w/lab.out" "${WAN_LAB[@]}"
rm -rf "$w/dst.img" "$w"/dst.img.dwcp-* "$w/.dwcp-migrate" "$w/scratch"
ip netns exec "$ns_b" "$dwcp" migrate recv --iface veth-b --local "$ip_b:7600" --peer "$ip_a:7600" \
  --core 1 --timeout 600 "$w/dst.img" >"$w/recv.out" 2>"$w/recv.err" &
rp=$!
sleep 0.3
(
  sleep "${AT_S:-4}"
  kill -STOP "$rp"; echo "destination stopped at $(date +%T.%N)"
  sleep "${STOP_S:-12}"
  kill -CONT "$rp"; echo "destination continued at $(date +%T.%N)"
) &
t0=$(date +%s.%N)
ip netns exec "$ns_a" "$dwcp" --json migrate send --iface veth-a --local "$ip_a:7600" \
  --peer "$ip_b:7600" --core 0 --timeout 600 --job-id 7600 --scratch "$w/scratch" "$src" \
  >"$w/send.json" 2>"$w/send.err" || echo "source failed: rc $?"
t1=$(date +%s.%N)
wait "$rp" || echo "destination failed"
echo "elapsed $(echo "$t1 - $t0" | bc) s"
if cmp -s "$src" "$w/dst.img"; then echo "destination image: exact"; else echo "destination image: DIFFERS"; exit 1; fi
python3 -c "import json,sys; print('pipeline', json.load(open(sys.argv[1]))['pipeline'])" "$w/send.json"
grep -h "WARN" "$w/send.err" "$w/recv.err" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-240
