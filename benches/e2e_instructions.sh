#!/usr/bin/env bash
# End to end in instructions (issue #15, target 4): the example server, a
# release build, under callgrind, serving N warm keep-alive requests (one
# curl connection) to each of
#   /api/v1/contacts                  api-access + contacts:read, demo key
#   /unprotected/api/v1/contacts      the same handler, no layers
#   /noop-layer/api/v1/contacts       behind a route_layer that does nothing
# Counting is switched on only around each batch (--instr-atstart=no,
# callgrind_control -z / -i on / -i off / -d), so the figure is the
# server's instructions per request, the same on every run of one build.
#
#   bash benches/e2e_instructions.sh          # N=2000
# Needs valgrind and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-2000}"
ADDR="${ADDR:-127.0.0.1:3198}"
TOKEN="ohk_demo_all_scopes"

cargo build --release --example onboardinghub >&2
bin="${CARGO_TARGET_DIR:-target}/release/examples/onboardinghub"
out="$(mktemp -d)"
ADDR="$ADDR" BENCH_UNPROTECTED=1 RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$out/callgrind.out" "$bin" >/dev/null 2>"$out/valgrind.log" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 600); do
  curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/contacts" && break
  sleep 0.1
done

batch() { # path: N requests on one keep-alive connection, each answered 200
  local config="$out/requests"
  for _ in $(seq "$N"); do printf 'url = "http://%s%s"\noutput = /dev/null\n' "$ADDR" "$1"; done >"$config"
  curl -fsS -H "Authorization: Bearer $TOKEN" -K "$config"
}

dumps=0
count() { # path -> instructions per request
  batch "$1" # warm: the connection's first requests, the cache, the allocator
  callgrind_control -z "$server" >/dev/null 2>&1
  callgrind_control -i on "$server" >/dev/null 2>&1
  batch "$1"
  callgrind_control -i off "$server" >/dev/null 2>&1
  callgrind_control -d "$server" >/dev/null 2>&1
  dumps=$((dumps + 1))
  local dump
  for _ in $(seq 100); do
    dump=$(ls "$out"/callgrind.out.* 2>/dev/null | sort -t. -k3 -n | tail -n 1 || true)
    [ -n "$dump" ] && [ "$(ls "$out"/callgrind.out.* | wc -l)" -ge "$dumps" ] && break
    sleep 0.1
  done
  local total
  total=$(awk '/^totals:/ { print $2; exit }' "$dump")
  echo $((total / N))
}

protected=$(count /api/v1/contacts)
open=$(count /unprotected/api/v1/contacts)
noop=$(count /noop-layer/api/v1/contacts)
echo "| route | instructions per request |"
echo "|---|---:|"
echo "| protected (\`api_access()\` + \`require_scope\`) | $protected |"
echo "| unprotected twin | $open |"
echo "| no-op route layer | $noop |"
python3 - "$protected" "$open" "$noop" <<'EOF'
import sys
p, o, n = map(int, sys.argv[1:])
print()
print(f"protected / unprotected: {p / o:.3f}  (target <= 1.05)")
print(f"scopegate's own (protected - no-op layer): {p - n} per request")
print(f"axum's route_layer plumbing (no-op - unprotected): {n - o} per request")
EOF
