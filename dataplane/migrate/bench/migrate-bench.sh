#!/usr/bin/env bash
# Image migration benchmark (docs/perf-migrate.md): the appliance (`dwcp migrate`) vs rsync
# (rsync daemon, no ssh) vs plain TCP copy (nc), side by side in one run over the namespace
# lab (`dwcp-lab up`, direct or WAN profile), several repetitions, min/median/max.
#
# Usage: migrate-bench.sh PROFILE REPS CASE...
#   PROFILE  direct | wan (50 ms RTT, 1 % loss each way, 200 Mbit/s)
#   CASE     full        destination empty, whole image (appliance, rsync, nc)
#            incN        destination holds v1, source has v1 with N/1000 of its blocks changed
#                        (appliance with a cached base, appliance with the manifest only,
#                        rsync delta); nc is the full copy again and is not re-run.
#                        The appliance's destination got v1 the way it does in service: by
#                        an (untimed) migration, so its manifest sidecar is valid, and the
#                        source kept v1's manifest (`dwcp`: base cache, `dwcp-manifest`: no
#                        base cache). `dwcp-cold`: nobody knows anything — a plain copy of v1
#                        (the destination hashes it at hello) and no manifest kept on the
#                        source (the destination's manifest crosses the link).
# Env: DIR (work dir, default /work/migrate-bench), DWCP, DWCP_LAB, MKCHANGE (binaries),
#      PEER_CC (TCP congestion control of the peers, default bbr: cubic collapses on the WAN
#      profile), SRC_IMG (default $DIR/img/image-v1.ext4 from scripts/make-test-image.sh).
# Output: one line per run on stdout: profile case tool rep seconds wire_bytes data_bytes
#         (wire = bytes transmitted by A's veth, all traffic of the run; data = image bytes).
# Needs root (namespaces), rsync, netcat-openbsd, zstd.
set -euo pipefail
profile="$1"; reps="$2"; shift 2
dir="${DIR:-/work/migrate-bench}"
t="${CARGO_TARGET_DIR:-target}"
dwcp="${DWCP:-$t/release/dwcp}"
lab_bin="${DWCP_LAB:-$t/release/dwcp-lab}"
mkchange="${MKCHANGE:-$t/release/examples/mkchange}"
cc="${PEER_CC:-bbr}"
v1="${SRC_IMG:-$dir/img/image-v1.ext4}"
for b in "$dwcp" "$lab_bin" "$mkchange"; do [[ -x $b ]] || { echo "missing $b" >&2; exit 1; }; done

. "$(dirname "$0")/lab.sh"
case "$profile" in
  direct) lab_args=(--profile direct) ;;
  wan) lab_args=("${WAN_LAB[@]}") ;;
  *) echo "profile: direct | wan" >&2; exit 2 ;;
esac
mkdir -p "$dir/a" "$dir/b" "$dir/logs"
trap lab_down EXIT
lab_up "$lab_bin" "$dir/logs/lab.out" "${lab_args[@]}"
A() { ip netns exec "$ns_a" "$@"; }
B() { ip netns exec "$ns_b" "$@"; }
for ns in "$ns_a" "$ns_b"; do ip netns exec "$ns" sysctl -qw net.ipv4.tcp_congestion_control="$cc"; done
echo "# lab $profile: A $ns_a $ip_a, B $ns_b $ip_b, peers' TCP cc $cc" >&2

txa() { A cat /sys/class/net/veth-a/statistics/tx_bytes; }
now() { date +%s.%N; }

cat >"$dir/rsyncd.conf" <<EOF
pid file = $dir/rsyncd.pid
use chroot = no
[m]
path = $dir/b
read only = no
uid = root
gid = root
EOF

port=7470
appliance() { # case rep src_image dst_holds(empty|v1|kept) cache(yes|no) [tool name]
  local c="$1" rep="$2" src="$3" holds="$4" cache="$5" tool=dwcp
  rm -rf "$dir/b/.dwcp-migrate"
  case $holds in
    empty) rm -rf "$dir/b/dst.img" "$dir/b/dst.img".dwcp-* ;;
    v1) rm -rf "$dir/b/dst.img" "$dir/b/dst.img".dwcp-*; cp --reflink=auto "$v1" "$dir/b/dst.img" ;;
    kept) ;;
  esac
  local extra=()
  if [[ $cache == yes ]]; then
    extra=(--base-cache "$dir/a/cache")
    # Restore the primed cache (a run updates it in place to the version it sent: a real
    # copy, not hard links).
    if [[ -d $dir/a/cache.v1 ]]; then rm -rf "$dir/a/cache"; cp -r --reflink=auto "$dir/a/cache.v1" "$dir/a/cache"; fi
  else
    tool=dwcp-manifest
  fi
  [[ -n ${6:-} ]] && tool="$6"
  port=$((port + 2))
  B "$dwcp" migrate recv --iface veth-b --local "$ip_b:$port" --peer "$ip_a:$port" --core 1 \
    --timeout 600 "$dir/b/dst.img" >"$dir/logs/recv.out" 2>"$dir/logs/recv.err" &
  local rp=$!
  sleep 0.3
  # The previous run's dirty pages are written back first: one disk serves every run.
  sync
  local w0 t0 t1 w1
  w0=$(txa); t0=$(now)
  A "$dwcp" --json migrate send --iface veth-a --local "$ip_a:$port" --peer "$ip_b:$port" --core 0 \
    --timeout 600 --job-id "$port" --scratch "$dir/a/scratch" "${extra[@]}" ${SEND_ARGS:-} "$src" \
    >"$dir/logs/send-$c-$tool-$rep.json" 2>"$dir/logs/send.err"
  t1=$(now); w1=$(txa)
  wait "$rp"
  cp "$dir/logs/recv.out" "$dir/logs/recv-$c-$tool-$rep.out"
  cmp -s "$src" "$dir/b/dst.img" || { echo "appliance: destination differs" >&2; exit 1; }
  echo "$profile $c $tool $rep $(echo "$t1 - $t0" | bc) $((w1 - w0)) $(stat -c %s "$src")"
}

rsync_run() { # case rep src dst_holds
  local c="$1" rep="$2" src="$3" holds="$4" z=()
  [[ $profile == wan ]] && z=(-z)
  rm -f "$dir/b/dst.img"; rm -rf "$dir/b/.~tmp~"
  [[ $holds == v1 ]] && cp --reflink=auto "$v1" "$dir/b/dst.img"
  rm -f "$dir/rsyncd.pid"
  B rsync --daemon --no-detach --port 8730 --config "$dir/rsyncd.conf" </dev/null >/dev/null 2>&1 &
  local rp=$!
  sleep 0.3
  # The previous run's dirty pages are written back first: one disk serves every run.
  sync
  local w0 t0 t1 w1
  w0=$(txa); t0=$(now)
  A rsync "${z[@]}" --no-whole-file "$src" "rsync://$ip_b:8730/m/dst.img"
  t1=$(now); w1=$(txa)
  kill "$(cat "$dir/rsyncd.pid")" 2>/dev/null || true; wait "$rp" 2>/dev/null || true
  cmp -s "$src" "$dir/b/dst.img" || { echo "rsync: destination differs" >&2; exit 1; }
  echo "$profile $c rsync${z[*]:+-z} $rep $(echo "$t1 - $t0" | bc) $((w1 - w0)) $(stat -c %s "$src")"
}

nc_run() { # case rep src
  local c="$1" rep="$2" src="$3"
  rm -f "$dir/b/dst.img"
  B sh -c "nc -l -p 9000 > '$dir/b/dst.img'" &
  local rp=$!
  sleep 0.3
  # The previous run's dirty pages are written back first: one disk serves every run.
  sync
  local w0 t0 t1 w1
  w0=$(txa); t0=$(now)
  A nc -N "$ip_b" 9000 <"$src"
  wait "$rp"
  t1=$(now); w1=$(txa)
  cmp -s "$src" "$dir/b/dst.img" || { echo "nc: destination differs" >&2; exit 1; }
  echo "$profile $c nc $rep $(echo "$t1 - $t0" | bc) $((w1 - w0)) $(stat -c %s "$src")"
}

for c in "$@"; do
  case "$c" in
    full)
      for rep in $(seq "$reps"); do
        rm -rf "$dir/a/cache" "$dir/a/cache.v1"
        tools=" ${TOOLS:-dwcp rsync nc} "
        if [[ $tools == *" dwcp "* ]]; then appliance full "$rep" "$v1" empty yes; fi
        if [[ $tools == *" rsync "* ]]; then rsync_run full "$rep" "$v1" empty; fi
        if [[ $tools == *" nc "* ]]; then nc_run full "$rep" "$v1"; fi
      done
      ;;
    inc*)
      pm="${c#inc}"
      v2="$dir/img/image-v2-$pm.ext4"
      if [[ ! -f $v2 ]]; then
        "$mkchange" "$v1" "$v2" "$pm" 7470 /usr/bin >"$v2.ref"
      fi
      read -r nblocks nbytes zref <"$v2.ref"
      echo "# $c: $nblocks changed blocks, $nbytes bytes, zstd -3 of exactly them: $zref bytes" >&2
      echo "$profile $c zstd-ref 0 0 $zref $nbytes"
      # Prime the source's base cache with v1 (what the destination holds).
      rm -rf "$dir/a/cache" "$dir/a/cache.v1"
      appliance prime 0 "$v1" empty yes >/dev/null
      cp -r "$dir/a/cache" "$dir/a/cache.v1"
      for rep in $(seq "$reps"); do
        # The destination holds v1 by migration (untimed restore; a no-op after the prime).
        appliance restore "$rep" "$v1" kept no >/dev/null
        appliance "$c" "$rep" "$v2" kept yes
        appliance restore "$rep" "$v1" kept no >/dev/null
        appliance "$c" "$rep" "$v2" kept no
        rm -rf "$dir/a/scratch/manifests"
        appliance "$c" "$rep" "$v2" v1 no dwcp-cold
        rsync_run "$c" "$rep" "$v2" v1
      done
      ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done
