#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) and prints,
# per target, the executions and whether it crashed. Needs nightly and
# cargo-fuzz (`cargo install cargo-fuzz`). Not a CI step: run it by hand,
#   bash fuzz/run.sh        # or SECONDS_PER_TARGET=600 bash fuzz/run.sh
# Crashes are written to fuzz/artifacts/<target>/; the corpus grows in
# fuzz/corpus/<target>/ (run `cargo +nightly fuzz cmin <target>` before
# committing it).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${SECONDS_PER_TARGET:-60}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/scopegate-fuzz-target}"
targets=(authorization scopes route_patterns jwt introspection api_key)
status=0
printf '%-16s %12s  %s\n' target executions result
for target in "${targets[@]}"; do
  log="$CARGO_TARGET_DIR/$target.log"
  mkdir -p "$CARGO_TARGET_DIR"
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  if [ "$rc" -eq 0 ]; then result="no crash"; else result="CRASH (rc $rc): see $log"; status=1; fi
  printf '%-16s %12s  %s\n' "$target" "${execs:-?}" "$result"
done
exit "$status"
