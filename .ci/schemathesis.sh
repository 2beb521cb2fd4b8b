#!/usr/bin/env bash
# schemathesis (PyPI) against the running example server and the document it
# serves at /openapi.json, once per demo token, with every check. Fails on
# any failure. Run from the repository: `bash .ci/schemathesis.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

version=4.32.5
if [ "$(st --version 2>/dev/null | awk '{print $NF}')" != "$version" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi
st --version

# The features `cargo test --all-features` built it with: no rebuild after it.
cargo build --quiet --all-features --example onboardinghub
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
# Keys in memory, limits in the process: the run creates and deletes records,
# never touching a database or Redis.
env -u DATABASE_URL -u OAUTH_ISSUER -u REDIS_URL ADDR="127.0.0.1:$port" \
  "$CARGO_TARGET_DIR/debug/examples/onboardinghub" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$port/openapi.json" >/dev/null && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$port/openapi.json" >/dev/null || { cat "$log" >&2; exit 1; }

# Each demo token: every scope; contacts:read only (most operations 403);
# a plan without api-access (every operation 403 forbidden).
for token in ohk_demo_all_scopes ohk_demo_contacts_read ohk_demo_no_api_access; do
  echo "== schemathesis with $token"
  st run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all --max-examples 50 --seed 1 --warnings off --no-color
done
