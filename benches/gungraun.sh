#!/usr/bin/env bash
# Instructions per request (benches/gungraun.rs, under callgrind) against
# the committed baseline in benches/gungraun-baseline/. Fails on a
# regression of more than 10 % in instructions (gungraun exits with 3), and
# on a bench the baseline lacks. Counts are the same on every run of the
# same build, whatever else the machine does, so this is a fair CI check.
#   bash benches/gungraun.sh          compare with the baseline
#   bash benches/gungraun.sh --save   make the current counts the baseline
# Needs valgrind and `cargo install gungraun-runner --version 0.20.0`.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=benches/gungraun-baseline
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT

if [ "${1:-}" = "--save" ]; then
  cargo bench --bench gungraun -- --home "$home" --save-baseline=committed
  rm -rf "$baseline"
  mkdir -p "$baseline"
  cp -r "$home"/. "$baseline"/
  echo "baseline saved in $baseline"
  exit 0
fi

[ -d "$baseline" ] || { echo "no baseline in $baseline: run with --save" >&2; exit 1; }
cp -r "$baseline"/. "$home"/
set +e
out=$(cargo bench --bench gungraun -- --home "$home" --baseline=committed 2>&1)
rc=$?
set -e
echo "$out" | grep -E '^gungraun::|Instructions:|Gungraun result' || true
if echo "$out" | grep -E 'Instructions:' | grep -q 'N/A'; then
  echo "a bench has no committed baseline: run bash benches/gungraun.sh --save" >&2
  exit 1
fi
[ "$rc" -eq 0 ] || { echo "$out" | tail -n 20 >&2; exit "$rc"; }
