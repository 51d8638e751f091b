#!/usr/bin/env bash
# Runs bench/ceiling/run.sh --smoke and checks that every case it takes from
# bench/compare/run.sh ran without errors against lockd-ceiling and reached
# the summary. Never asserts figures.
set -euo pipefail
if ! command -v jq > /dev/null; then
  echo "SKIP: jq not installed"
  exit 0
fi
OUT="${TEST_TMPDIR:-/tmp}/ceiling-smoke"
LOCKD_BENCH="$(pwd)/bench/loadgen/lockd-bench" \
  LOCKD_CEILING="$(pwd)/bench/ceiling/lockd-ceiling" \
  bench/ceiling/run.sh --smoke --out="$OUT"

want=$(sed -n 's/^CEILING_CASES="\(.*\)"$/\1/p' bench/ceiling/run.sh | wc -w)
got=$(jq 'map(select(.throughput > 0)) | length' "$OUT/medians.json")
errors=$(jq 'map(.errors) | add' "$OUT/medians.json")
echo "cases: $got (want $want), errors: $errors"
[[ $want -ge 6 ]] || { echo "FAIL: run.sh's case list not found"; exit 1; }
[[ $got -eq $want ]] || { echo "FAIL: want $want cases, got $got"; exit 1; }
[[ $errors -eq 0 ]] || { echo "FAIL: $errors errors"; exit 1; }
grep -q '^| put-200c | [0-9]' "$OUT/summary.md" ||
  { echo "FAIL: summary.md lacks the put-200c row"; cat "$OUT/summary.md"; exit 1; }
echo PASS
