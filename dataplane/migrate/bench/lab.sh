# Sourced by the benchmark scripts next to it (not run on its own).
# WAN_LAB: the WAN profile's `dwcp-lab up` arguments (50 ms RTT, 1 % loss each way,
# 200 Mbit/s). lab_up BIN OUT ARGS... starts `BIN up ARGS --stats-secs 0` in the background
# with its output in OUT, waits until both namespaces are up, and sets lab_pid, ns_a, ns_b,
# ip_a, ip_b; lab_down stops it (call it from an EXIT trap).
WAN_LAB=(--profile wan --delay-ms 25 --loss 0.01 --rate-mbit 200)
lab_up() {
  local bin="$1" out="$2"
  shift 2
  "$bin" up "$@" --stats-secs 0 >"$out" 2>&1 &
  lab_pid=$!
  for _ in $(seq 100); do grep -q "^  B:" "$out" && break; sleep 0.1; done
  ns_a=$(awk '/^  A:/ {print $2}' "$out"); ns_b=$(awk '/^  B:/ {print $2}' "$out")
  ip_a=$(awk '/^  A:/ {print $3}' "$out"); ip_b=$(awk '/^  B:/ {print $3}' "$out")
  [[ -n $ns_b ]] || { cat "$out" >&2; return 1; }
}
lab_down() {
  kill -INT "$lab_pid" 2>/dev/null || true
  wait "$lab_pid" 2>/dev/null || true
}
