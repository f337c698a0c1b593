#!/usr/bin/env bash
# Checks everything under deploy/ against real tools and a real running appliance:
#   1. install.sh: --dry-run changes nothing; --root stages the tree; a second run upgrades
#      (old binaries kept as *.prev, operator config kept, shipped one as *.dist);
#      --rollback restores; systemd-analyze verify on the installed units.
#   2. Kubernetes manifests: kubernetes-validate --strict (PyPI, bundled schemas, offline)
#      for core kinds; the ServiceMonitor against the prometheus-operator CRD schema
#      (npm @kubernetes-models/prometheus-operator); a broken copy of each must be refused.
#   3. Prometheus: promtool check rules, promtool test rules.
#   4. A real dwcp-control with a real `dwcp daemon` attached: /metrics through
#      promtool check metrics; every metric and label used by the Grafana dashboard and the
#      alert rules exists in that scrape.
#   5. The Wireshark dissector: a real `dwcp send` -> `dwcp recv` transfer over loopback is
#      captured with tshark on port 7470, dissected with the Lua script, and its fields
#      (magic, version, type, flags, stream, seq, object, offset, codec, CRC) checked.
# Needs: promtool (Debian prometheus) and tshark (scripts/setup.sh installs both), python3-venv,
# node and npm (part of the project machine's base image), the release binaries (builds them if missing). Tools from PyPI/npm go to
# $DWCP_DEPLOY_TOOLS (default /tmp/dwcp-deploy-tools), pinned.
# Usage: deploy/check.sh            Prints "N passed, M failed"; exit 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
tools=${DWCP_DEPLOY_TOOLS:-/tmp/dwcp-deploy-tools}
tmp=$(mktemp -d /tmp/dwcp-deploy-check.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local name=$1; shift; if "$@" >"$tmp/last.log" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/     /' "$tmp/last.log" | tail -20; fi; }
refuse() { local name=$1; shift; if "$@" >"$tmp/last.log" 2>&1; then bad "$name (a broken input was accepted)"; else ok "$name"; fi; }

# ---- tools ---------------------------------------------------------------------------------
for t in promtool tshark systemd-analyze npm python3; do
  command -v $t >/dev/null || { echo "deploy/check.sh: $t missing (run scripts/setup.sh)" >&2; exit 1; }
done
if [[ ! -x $tools/venv/bin/kubernetes-validate ]]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi
if [[ ! -d $tools/npm/node_modules/@kubernetes-models/prometheus-operator ]]; then
  mkdir -p "$tools/npm"
  (cd "$tools/npm" && npm install --silent --no-audit --no-fund --prefix . \
    @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0 >/dev/null)
fi
py=$tools/venv/bin/python
bin=$CARGO_TARGET_DIR/release
if [[ ! -x $bin/dwcp || ! -x $bin/dwcp-control ]]; then
  cargo build -q --release -p dwcp-control -p dwcp-engine --bin dwcp-control --bin dwcp
fi

# ---- 1. install path and systemd units ------------------------------------------------------
root=$tmp/root
check "install.sh --dry-run prints actions and changes nothing" bash -c "
  out=\$(deploy/install.sh --dry-run --root '$root' --target-dir '$CARGO_TARGET_DIR')
  grep -q '^+ install -m 0755 .*/release/dwcp ' <<<\"\$out\" && [[ ! -e '$root' ]]"
check "install.sh --root stages binaries, units, config, docs" bash -c "
  deploy/install.sh --root '$root' --prefix /opt/dwcp --target-dir '$CARGO_TARGET_DIR' &&
  for f in opt/dwcp/bin/dwcp opt/dwcp/bin/dwcp-control etc/dwcp/control.toml etc/dwcp/dataplane.env \
           etc/dwcp/profile.toml etc/systemd/system/dwcp-control.service \
           etc/systemd/system/dwcp-dataplane.service opt/dwcp/share/doc/dwcp/operations.md; do
    [[ -e '$root'/\$f ]] || { echo missing \$f; exit 1; }; done &&
  grep -q '^ExecStart=/opt/dwcp/bin/dwcp daemon' '$root/etc/systemd/system/dwcp-dataplane.service' &&
  cmp '$root/opt/dwcp/bin/dwcp' '$bin/dwcp'"
check "installed control.toml is accepted by dwcp-control (unknown keys are refused)" bash -c "
  sed -e 's#/var/lib/dwcp-control#$tmp/cfgstate#' -e 's#/dev/shm/dwcp#$tmp/cfgregion#' \
      -e 's#127.0.0.1:7480#127.0.0.1:0#' '$root/etc/dwcp/control.toml' >'$tmp/control.toml' &&
  timeout 3 '$bin/dwcp-control' --config '$tmp/control.toml' >'$tmp/cfg.out' 2>&1; grep -q 'listening on' '$tmp/cfg.out'"
check "upgrade keeps operator config and old binaries; rollback restores them" bash -c "
  echo '# operator edit' >>'$root/etc/dwcp/control.toml' &&
  cp '$root/opt/dwcp/bin/dwcp' '$tmp/dwcp.v1' && echo x >>'$root/opt/dwcp/bin/dwcp' &&
  deploy/install.sh --root '$root' --prefix /opt/dwcp --target-dir '$CARGO_TARGET_DIR' | grep -q upgraded &&
  grep -q '# operator edit' '$root/etc/dwcp/control.toml' && [[ -e '$root/etc/dwcp/control.toml.dist' ]] &&
  [[ -e '$root/opt/dwcp/bin/dwcp.prev' ]] && cmp -s '$root/opt/dwcp/bin/dwcp' '$bin/dwcp' &&
  deploy/install.sh --root '$root' --prefix /opt/dwcp --rollback &&
  ! cmp -s '$root/opt/dwcp/bin/dwcp' '$bin/dwcp'"
mkdir -p "$root/usr/lib/systemd" && cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
verify() { # systemd-analyze prints problems (unknown keys, bad values) and may still exit 0
  systemd-analyze verify --man=no --root="$root" "$@" >"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log"; return 1; }
  [[ ! -s $tmp/verify.log ]] || { cat "$tmp/verify.log"; return 1; }
}
check "systemd-analyze verify dwcp-control.service dwcp-dataplane.service" \
  verify "$root/etc/systemd/system/dwcp-control.service" "$root/etc/systemd/system/dwcp-dataplane.service"
sed 's/^NoNewPrivileges=yes/NoNewPrivileges=maybe/' "$root/etc/systemd/system/dwcp-control.service" >"$root/etc/systemd/system/broken.service"
refuse "systemd-analyze verify refuses a broken unit" verify "$root/etc/systemd/system/broken.service"
check "dataplane unit grants exactly NET_ADMIN NET_RAW BPF IPC_LOCK; control none" bash -c "
  grep -qx 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK' deploy/systemd/dwcp-dataplane.service &&
  grep -qx 'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK' deploy/systemd/dwcp-dataplane.service &&
  grep -qx 'CapabilityBoundingSet=' deploy/systemd/dwcp-control.service &&
  ! grep -qE '^[^#]*SYS_ADMIN' deploy/systemd/*.service deploy/k8s/daemonset.yaml"

# ---- 2. Kubernetes manifests -----------------------------------------------------------------
core=(deploy/k8s/namespace.yaml deploy/k8s/configmap.yaml deploy/k8s/daemonset.yaml deploy/k8s/service.yaml)
check "kubernetes-validate --strict (Namespace, ConfigMap, DaemonSet, Service)" bash -c "
  '$tools/venv/bin/kubernetes-validate' --strict ${core[*]} | tee /dev/stderr | grep -c passed | grep -qx ${#core[@]}"
sed 's/hostNetwork: true/hostNetwork: "yes"/' deploy/k8s/daemonset.yaml >"$tmp/bad-ds.yaml"
refuse "kubernetes-validate refuses a broken DaemonSet" "$tools/venv/bin/kubernetes-validate" --strict "$tmp/bad-ds.yaml"
# ES modules resolve packages next to the script: run a copy placed beside node_modules.
cp deploy/k8s/validate-servicemonitor.mjs "$tools/npm/"
check "ServiceMonitor against the prometheus-operator CRD schema" \
  node "$tools/npm/validate-servicemonitor.mjs" deploy/k8s/servicemonitor.yaml
sed 's/interval: 15s/interval: 15/' deploy/k8s/servicemonitor.yaml >"$tmp/bad-sm.yaml"
refuse "the CRD schema refuses a broken ServiceMonitor" \
  node "$tools/npm/validate-servicemonitor.mjs" "$tmp/bad-sm.yaml"
check "ConfigMap: profile.toml is the shipped default profile, control.toml starts dwcp-control" bash -c "
  '$py' -c 'import yaml,sys; d=yaml.safe_load(open(\"deploy/k8s/configmap.yaml\")); open(sys.argv[1],\"w\").write(d[\"data\"][\"profile.toml\"]); open(sys.argv[2],\"w\").write(d[\"data\"][\"control.toml\"].replace(\"0.0.0.0:7480\",\"127.0.0.1:0\").replace(\"/var/lib/dwcp-control\",sys.argv[3]).replace(\"/dev/shm/dwcp\",sys.argv[4]))' \
    '$tmp/cm-profile.toml' '$tmp/cm-control.toml' '$tmp/cmstate' '$tmp/cmregion' &&
  cmp '$tmp/cm-profile.toml' hw-profiles/profiles/default.toml &&
  timeout 3 '$bin/dwcp-control' --config '$tmp/cm-control.toml' >'$tmp/cm.out' 2>&1; grep -q 'listening on' '$tmp/cm.out'"

# ---- 3. Prometheus rules ----------------------------------------------------------------------
check "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules" bash -c "cd deploy/prometheus && promtool test rules alerts_test.yml"

# ---- 4. a real control process with a real dataplane: /metrics ---------------------------------
"$bin/dwcp-control" --listen 127.0.0.1:0 --state-dir "$tmp/state" --shm-path "$tmp/region" \
  >"$tmp/control.out" 2>"$tmp/control.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$tmp/control.out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$tmp/control.out")
# With the installed default hardware profile (the daemon refuses to start on a bad one).
RUST_LOG=warn "$bin/dwcp" daemon --shm "$tmp/region" --objects "$tmp" --workers 2 \
  --profile "$root/etc/dwcp/profile.toml" 2>"$tmp/daemon.err" &
pids+=($!)
for _ in $(seq 100); do [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz") == 200 ]] && break; sleep 0.1; done
token=$(cat "$tmp/state/token")
curl -sf -X PUT "http://$addr/v1/flags/check.flag" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d '{"kind":"bool","enabled":true}' >/dev/null
curl -s "http://$addr/v1/health" >/dev/null
curl -s "http://$addr/metrics" >"$tmp/metrics.txt"
curl -s -H 'Accept: application/openmetrics-text;version=1.0.0' "http://$addr/metrics" >"$tmp/metrics.om"
check "/readyz is 200 with the real dataplane attached" \
  bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' http://$addr/readyz) == 200 ]]"
check "promtool check metrics on a real /metrics" bash -c "promtool check metrics <'$tmp/metrics.txt'"
check "OpenMetrics exposition ends with # EOF" bash -c "tail -n1 '$tmp/metrics.om' | grep -qx '# EOF'"
check "dashboard JSON and alert rules use only exported metric and label names" \
  "$py" deploy/check-metric-names.py "$tmp/metrics.txt" deploy/grafana/dwcp-dashboard.json deploy/prometheus/alerts.yml
sed 's/dwcp_ring_lag{/dwcp_ring_lagg{/' deploy/grafana/dwcp-dashboard.json >"$tmp/bad-dash.json"
refuse "the name check refuses a dashboard with an unknown metric" \
  "$py" deploy/check-metric-names.py "$tmp/metrics.txt" "$tmp/bad-dash.json"

# ---- 5. tshark dissector on a capture of a real transfer ---------------------------------------
head -c $((3 << 20)) /dev/urandom >"$tmp/object"
cap=$tmp/dwcp.pcapng
tshark -q -i lo -f "udp port 7470 and udp port 7471" -w "$cap" >"$tmp/tshark.out" 2>&1 &
tspid=$!
pids+=($tspid)
for _ in $(seq 100); do grep -q "Capturing on" "$tmp/tshark.out" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
"$bin/dwcp" --json recv --iface lo --backend udp --local 127.0.0.1:7471 --peer 127.0.0.1:7470 \
  --timeout 30 "$tmp/received" >"$tmp/recv.json" 2>"$tmp/recv.err" &
rpid=$!
sleep 0.3
"$bin/dwcp" --json send --iface lo --backend udp --local 127.0.0.1:7470 --peer 127.0.0.1:7471 \
  --timeout 30 --object-id 4242 "$tmp/object" >"$tmp/send.json" 2>"$tmp/send.err" || true
wait "$rpid" || true
sleep 0.5
kill -INT "$tspid" 2>/dev/null || true
wait "$tspid" 2>/dev/null || true
check "transfer for the capture completed (file identical)" cmp "$tmp/object" "$tmp/received"
fields=(dwcp.magic dwcp.version dwcp.type dwcp.flags dwcp.flags.last dwcp.stream dwcp.conn
        dwcp.payload_len dwcp.seq dwcp.object dwcp.offset dwcp.codec dwcp.baseline dwcp.crc32c.ok
        dwcp.hello.versions udp.length)
tshark -r "$cap" -X lua_script:"$repo/deploy/wireshark/dwcp.lua" -Y dwcp -T fields -E separator=/t \
  $(printf -- '-e %s ' "${fields[@]}") >"$tmp/fields.tsv" 2>"$tmp/dissect.err" || true
check "dissector: every frame's fields are consistent with the spec and the transfer" \
  "$py" - "$tmp/fields.tsv" 4242 $((3 << 20)) <<'PYEOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
obj, size = int(sys.argv[2]), int(sys.argv[3])
# One row per captured datagram; a GSO super-datagram (sending host) holds several frames, so
# each per-frame field is a comma-separated list.
types, last, conns, frames, data_bytes = {}, 0, set(), 0, 0  # conns: of DATA frames
for r in rows:
    cols = [c.split(",") if c else [] for c in r]
    (magic, ver, typ, flags, flast, stream, conn, plen, seq, o, off, codec, base, crc_ok,
     hello, udplen) = cols
    n = len(magic)
    assert n >= 1 and all(len(c) == n for c in cols[:14]), f"ragged row: {r}"
    assert sum(48 + int(p) + 4 for p in plen) == int(udplen[0]) - 8, f"lengths: {r}"
    for i in range(n):
        frames += 1
        assert int(magic[i], 16) == 0xDC57, r
        assert int(ver[i]) in (1, 3), r
        t = int(typ[i], 16)
        types[t] = types.get(t, 0) + 1
        assert int(flags[i], 16) & ~0x7 == 0, r
        assert crc_ok[i] in ("True", "1"), f"CRC32C not valid: {r}"
        if t == 0x10:
            conns.add(conn[i])
            assert int(stream[i]) < 0xFFFF and int(o[i]) == obj and 0 <= int(codec[i]) <= 5, r
            assert int(off[i]) + int(plen[i]) <= size and int(base[i]) == 0, r
            last += flast[i] in ("True", "1")
            data_bytes += int(plen[i])
        else:
            assert int(stream[i]) == 0xFFFF and int(o[i]) == 0 and int(off[i]) == 0, r
        if t in (1, 2):
            assert hello and int(hello[0], 16) & 0x2, f"HELLO without v1 bit: {r}"
assert frames > 100, f"only {frames} DWCP frames dissected"
for t in (0x01, 0x02, 0x10, 0x11):
    assert types.get(t), f"no frame of type {t:#x} in {types}"
assert last >= 1, "no DATA frame with LAST"
assert len(conns) == 1, f"DATA frames on several connections: {conns}"
assert data_bytes >= size, f"DATA payload {data_bytes} < object {size}"
print(f"{len(rows)} datagrams, {frames} frames, types {dict((hex(k), v) for k, v in sorted(types.items()))}, {last} LAST")
PYEOF
check "dissector: no malformed/expert errors on the capture" bash -c "
  ! tshark -r '$cap' -X lua_script:'$repo/deploy/wireshark/dwcp.lua' -Y '_ws.expert.severity >= error || _ws.malformed' | grep -q ."
"$py" - "$cap" "$tmp/corrupt.pcapng" <<'PYEOF'
# A copy of the capture with one payload byte flipped in the first DATA frame (for the CRC check).
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.find(bytes([0xDC, 0x57, 0x03, 0x10])) if b.find(bytes([0xDC, 0x57, 0x03, 0x10])) >= 0 else b.find(bytes([0xDC, 0x57, 0x01, 0x10]))
b[i + 60] ^= 0xFF
open(sys.argv[2], "wb").write(b)
PYEOF
check "dissector flags a corrupted frame's CRC32C" bash -c "
  tshark -r '$tmp/corrupt.pcapng' -X lua_script:'$repo/deploy/wireshark/dwcp.lua' -Y 'dwcp.crc32c.ok == 0' -T fields -e dwcp.type | grep -q 0x10"

echo "deploy/check.sh: $passed passed, $failed failed"
((failed == 0))
