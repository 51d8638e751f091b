#!/usr/bin/env bash
# Runs bench/compare/run.sh --smoke against etcd only and checks that every
# case produced an error-free report and a summary. Never asserts figures.
set -euo pipefail
for tool in /usr/bin/etcd /usr/bin/etcdctl jq ss; do
  if ! command -v "$tool" > /dev/null; then
    echo "SKIP: $tool not installed"
    exit 0
  fi
done
HERE="$(pwd)/bench/compare"
OUT="${TEST_TMPDIR:-/tmp}/compare-smoke"
LOCKD_BENCH="$(pwd)/bench/loadgen/lockd-bench" \
  "$HERE/run.sh" --smoke --systems=etcd --out="$OUT"

cases=$(jq -s 'length' "$OUT/results.jsonl")
errors=$(jq -s 'map(.errors_total) | add' "$OUT/results.jsonl")
echo "cases: $cases, errors: $errors"
[[ $cases -eq 12 ]] || { echo "FAIL: want 12 reports, got $cases"; exit 1; }
[[ $errors -eq 0 ]] || { echo "FAIL: $errors errors"; exit 1; }
grep -q '^| put-200c | 200/50 | [0-9]' "$OUT/summary.md" ||
  { echo "FAIL: summary.md lacks the put-200c row"; cat "$OUT/summary.md"; exit 1; }
jq -e '.machine.nproc > 0 and (.runs | length) == 12' "$OUT/results.json" > /dev/null
echo PASS
