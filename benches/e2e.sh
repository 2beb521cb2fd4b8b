#!/usr/bin/env bash
# End to end: the example server under wrk on loopback. Compares
# GET /api/v1/contacts (api-access + contacts:read, demo key) with the same
# handler mounted without layers at /unprotected/api/v1/contacts, and behind
# a route_layer that does nothing at /noop-layer/api/v1/contacts (what axum's
# route-layer plumbing costs by itself), in one run, alternating the three so
# drift hits all alike. Bounded: ROUNDS x 3 x DURATION of load (default
# 3 x 3 x 10 s), plus a build.
#
#   bash benches/e2e.sh               # DURATION=10s CONNECTIONS=32 ROUNDS=3 KEYS=1
#   KEYS=16 bash benches/e2e.sh       # rotate 16 keys instead of one
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-3}"
ADDR="${ADDR:-127.0.0.1:3199}"
TOKEN="ohk_demo_all_scopes"

command -v wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }

cargo build --release --example onboardinghub >&2
bin="${CARGO_TARGET_DIR:-target}/release/examples/onboardinghub"
ADDR="$ADDR" BENCH_UNPROTECTED=1 "$bin" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/contacts" && break
  sleep 0.1
done
# Both routes answer the same body.
protected=$(curl -fs -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/contacts")
open=$(curl -fs -H "Authorization: Bearer $TOKEN" "http://$ADDR/unprotected/api/v1/contacts")
noop=$(curl -fs -H "Authorization: Bearer $TOKEN" "http://$ADDR/noop-layer/api/v1/contacts")
[ "$protected" = "$open" ] && [ "$noop" = "$open" ] ||
  { echo "routes differ: $protected vs $open vs $noop" >&2; exit 1; }


# KEYS>1: create that many keys through developer settings; a wrk script
# rotates them, so requests do not all hit one cache entry.
KEYS="${KEYS:-1}"
script=""
if [ "$KEYS" -gt 1 ]; then
  script="$(mktemp --suffix=.lua)"
  trap 'kill $server 2>/dev/null || true; rm -f "$script"' EXIT
  {
    echo "local tokens = {"
    for _ in $(seq "$KEYS"); do
      curl -fs -X POST -H "Authorization: Bearer demo-admin-token" \
        -d '{"name":"bench","scopes":["contacts:read"]}' "http://$ADDR/developer/keys" |
        python3 -c 'import json,sys; print("  \"" + json.load(sys.stdin)["token"] + "\",")'
    done
    echo "}"
    echo "local i = 0"
    echo "request = function() i = i % #tokens + 1; return wrk.format(nil, nil, {Authorization = 'Bearer ' .. tokens[i]}) end"
  } > "$script"
fi

load() { # path -> "req_per_s p99_ms non2xx"
  local extra=()
  [ -n "$script" ] && extra=(-s "$script")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${extra[@]}" -H "Authorization: Bearer $TOKEN" "http://$ADDR$1")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps $p99 ${bad:-0}"
}

load /api/v1/contacts >/dev/null   # warm-up
echo "| round | unprotected req/s | no-op layer req/s | protected req/s | protected ÷ unprotected | protected ÷ no-op layer | unprotected p99 ms | no-op p99 ms | protected p99 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
sum_o=0; sum_n=0; sum_p=0
for round in $(seq "$ROUNDS"); do
  read -r o_rps o_p99 o_bad <<<"$(load /unprotected/api/v1/contacts)"
  read -r n_rps n_p99 n_bad <<<"$(load /noop-layer/api/v1/contacts)"
  read -r p_rps p_p99 p_bad <<<"$(load /api/v1/contacts)"
  [ "$o_bad" = 0 ] && [ "$n_bad" = 0 ] && [ "$p_bad" = 0 ] ||
    { echo "non-2xx responses: $o_bad / $n_bad / $p_bad" >&2; exit 1; }
  ratio=$(awk -v p="$p_rps" -v o="$o_rps" 'BEGIN {printf "%.3f", p / o}')
  own=$(awk -v p="$p_rps" -v n="$n_rps" 'BEGIN {printf "%.3f", p / n}')
  echo "| $round | $o_rps | $n_rps | $p_rps | $ratio | $own | $o_p99 | $n_p99 | $p_p99 |"
  sum_o=$(awk -v a="$sum_o" -v b="$o_rps" 'BEGIN {print a + b}')
  sum_n=$(awk -v a="$sum_n" -v b="$n_rps" 'BEGIN {print a + b}')
  sum_p=$(awk -v a="$sum_p" -v b="$p_rps" 'BEGIN {print a + b}')
done
awk -v p="$sum_p" -v o="$sum_o" -v n="$sum_n" 'BEGIN {
  printf "\nprotected / unprotected throughput over all rounds: %.3f\n", p / o
  printf "no-op layer / unprotected: %.3f; protected / no-op layer: %.3f\n", n / o, p / n
}'
