#!/usr/bin/env bash
# Property-based fuzzing of the control API against its served OpenAPI document with
# schemathesis (PyPI, pinned). Self-contained, for CI:
#   - creates a venv (default /tmp/dwcp-schemathesis-<version>, or $ST_VENV) and pip-installs
#     schemathesis==$ST_VERSION into it once;
#   - builds dwcp-control and dwcp if missing, starts a real dwcp-control on a free loopback
#     port with a temporary state dir (its generated bearer token is passed to schemathesis)
#     and a real `dwcp daemon` attached to the temporary region (so /readyz is 200; the daemon
#     has no port, so it fails the jobs the fuzzer creates, as it must);
#   - runs every phase (examples, coverage, fuzzing, stateful) for a fixed time budget and
#     fails on any 5xx, any response that does not match its schema, wrong content types,
#     missing headers, and non-JSON errors; stops both processes.
# Excluded checks: ignored_auth (GETs are deliberately unauthenticated) and
# positive_data_acceptance (rules JSON Schema cannot state are refused with 422 by design:
# stages must be strictly increasing; integers written as floats such as 1.0 are refused).
# Usage: scripts/api-fuzz.sh [seconds=150]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-150}
ST_VERSION=${ST_VERSION:-4.32.5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
venv=${ST_VENV:-/tmp/dwcp-schemathesis-$ST_VERSION}
if [[ ! -x $venv/bin/st ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
bin=$CARGO_TARGET_DIR/release
if [[ ! -x $bin/dwcp-control || ! -x $bin/dwcp ]]; then
  cargo build -q --release -p dwcp-control -p dwcp-engine --bin dwcp-control --bin dwcp
fi
tmp=$(mktemp -d /tmp/dwcp-api-fuzz.XXXXXX)
cleanup() {
  kill "${srv:-}" "${dp:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/dwcp-control" --listen 127.0.0.1:0 --state-dir "$tmp/state" --shm-path "$tmp/region" \
  >"$tmp/out" 2>"$tmp/err" &
srv=$!
for _ in $(seq 100); do grep -q "listening on" "$tmp/out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$tmp/out")
[[ -n $addr ]] || { cat "$tmp/err" >&2; exit 1; }
token=$(cat "$tmp/state/token")
RUST_LOG=warn "$bin/dwcp" daemon --shm "$tmp/region" --objects "$tmp" --workers 2 2>"$tmp/daemon.err" &
dp=$!
for _ in $(seq 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz") == 200 ]] && break
  sleep 0.1
done
echo "api-fuzz: schemathesis $ST_VERSION against http://$addr for ${secs}s"
rc=0
"$venv/bin/st" run "http://$addr/v1/openapi.json" \
  --url "http://$addr" \
  -H "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks ignored_auth,positive_data_acceptance \
  --phases examples,coverage,fuzzing,stateful \
  --max-time "$secs" \
  --request-timeout 5 \
  --seed "${ST_SEED:-7470}" \
  --no-color || rc=$?
if ! kill -0 "$srv" 2>/dev/null; then
  echo "api-fuzz: dwcp-control died during the run:" >&2
  tail -20 "$tmp/err" >&2
  rc=1
fi
if grep -q "panicked" "$tmp/err"; then
  echo "api-fuzz: dwcp-control panicked:" >&2
  grep -A5 panicked "$tmp/err" >&2
  rc=1
fi
exit $rc
