#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...] — builds the fuzz targets on stable without cargo-fuzz (the
# same instrumentation flags cargo-fuzz passes, RUSTC_BOOTSTRAP=1 for libFuzzer's needs) and
# runs each for SECONDS (default 60) from a copy of its seed corpus. Crashes land in
# fuzz/artifacts/TARGET/; copy a crash into corpus/TARGET/ so tests/fuzz_corpus.rs keeps it.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(respond zonefile federation skydns)
TRIPLE=$(rustc -vV | awk '/^host:/ {print $2}')
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock
RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$TRIPLE" $(printf -- '--bin %s ' "${TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  work=$(mktemp -d)
  cp corpus/"$t"/* "$work"/
  mkdir -p artifacts/"$t"
  echo "== $t ($SECS s)"
  target/"$TRIPLE"/release/"$t" "$work" -max_total_time="$SECS" -rss_limit_mb=1024 \
    -artifact_prefix=artifacts/"$t"/ -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed|==[0-9]+== ERROR|SUMMARY)' || true
  rm -rf "$work"
done
