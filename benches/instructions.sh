#!/usr/bin/env bash
# Instructions per request of each variant of benches/instructions.rs, under
# callgrind: the total of COUNT requests minus the total of none, over COUNT.
#   bash benches/instructions.sh [BINARY]    (default: build it with cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
count=10000
bin=${1:-}
if [ -z "$bin" ]; then
  bin=$(cargo bench --bench instructions --features redis --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
fi
total() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*instructions::run*' \
    "$bin" "$1" "$2" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-20s %s\n' variant instructions/request
for variant in bare peer_minimal_handwritten stacked_hit stacked_hit_one_limit stacked_hit_one_limit_no_headers stacked_hit_one_limit_cluster json_stacked_hit json_stacked_hit_one_limit reject_401_missing reject_401_unknown reject_403_scope; do
  base=$(total "$variant" 0)
  full=$(total "$variant" "$count")
  printf '%-20s %s\n' "$variant" $(( (full - base) / count ))
done
