#!/usr/bin/env bash
# Bounded fuzzing of the core: every target for SECONDS (default 12), the scan
# corpus seeded with the test fixtures. Exits non-zero on the first crash
# (libFuzzer writes the input to fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-12}"
export RUSTC_BOOTSTRAP=1   # cargo-fuzz's flags are nightly-only; the stable toolchain accepts them this way
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/scan
i=0
for f in ../../tests/fixtures/*/*.sse ../../tests/fixtures/*/*.json ../../tests/fixtures/*/*.bin ../../tests/fixtures/*/*.ndjson; do
  i=$((i + 1))
  { printf "\\x$(printf %02x $((i % 9)))\\x00\\x00\\x00"; cat "$f"; } > "fuzz/corpus/scan/fixture-$i"
done
log="$(mktemp)"
for t in scan eventstream decode count; do
  if ! cargo fuzz run -O --fuzz-dir fuzz "$t" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=3072 \
      > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t FAILED: the crashing input is in rust/core/fuzz/artifacts/$t/"
    exit 1
  fi
  echo "$t: $(grep -E '^Done' "$log")"
done
