#!/usr/bin/env bash
# Property-based fuzzing of the control API against its OpenAPI document with schemathesis.
# Starts dwcp-control on a temporary state dir, runs schemathesis with the bearer token, and
# fails on 5xx responses, responses that do not match the schemas, or non-JSON errors.
# Excluded checks: ignored_auth (GETs are deliberately unauthenticated) and
# positive_data_acceptance (rules JSON Schema cannot state are refused with 422 by design:
# stages must be strictly increasing; integers written as floats such as 1.0 are refused).
# Usage: scripts/api-fuzz.sh [max-examples=50]
# Needs schemathesis (pip install schemathesis); a venv under $ST_VENV (default
# ~/.cache/dwcp-schemathesis) is created when `st` is not on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
if ! command -v st >/dev/null; then
  venv=${ST_VENV:-$HOME/.cache/dwcp-schemathesis}
  [[ -x $venv/bin/st ]] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
  PATH=$venv/bin:$PATH
fi
cargo build -q --release -p dwcp-control --bin dwcp-control --example fake_dataplane
tmp=$(mktemp -d)
cleanup() { kill "${srv:-}" "${dp:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"$CARGO_TARGET_DIR/release/dwcp-control" --listen 127.0.0.1:0 --state-dir "$tmp/state" \
  --shm-path "$tmp/region" >"$tmp/out" 2>"$tmp/err" &
srv=$!
for _ in $(seq 100); do grep -q "listening on" "$tmp/out" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$tmp/out")
token=$(cat "$tmp/state/token")
# A stand-in dataplane so /readyz is 200 (a 503 there is correct but counts as a server error).
"$CARGO_TARGET_DIR/release/examples/fake_dataplane" "$tmp/region" &
dp=$!
sleep 0.3
st run "http://$addr/v1/openapi.json" \
  --url "http://$addr" \
  -H "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks ignored_auth,positive_data_acceptance \
  --max-examples "$n" \
  --phases examples,fuzzing
