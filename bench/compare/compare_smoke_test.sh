#!/usr/bin/env bash
# Runs bench/compare/run.sh --smoke against etcd only and checks that every
# case produced an error-free report and a summary, then one case on a single
# member (--members=1). Never asserts figures.
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

# One report per case of run.sh's list, and one for datascale.
want=$(($(grep -c '^  "[a-z0-9-]*|' "$HERE/run.sh") + 1))
cases=$(jq -s 'length' "$OUT/results.jsonl")
errors=$(jq -s 'map(.errors_total) | add' "$OUT/results.jsonl")
echo "cases: $cases (want $want), errors: $errors"
[[ $want -ge 13 ]] || { echo "FAIL: run.sh's case list not found"; exit 1; }
[[ $cases -eq $want ]] || { echo "FAIL: want $want reports, got $cases"; exit 1; }
[[ $errors -eq 0 ]] || { echo "FAIL: $errors errors"; exit 1; }
grep -q '^| put-200c | 200/50 | [0-9]' "$OUT/summary.md" ||
  { echo "FAIL: summary.md lacks the put-200c row"; cat "$OUT/summary.md"; exit 1; }
jq -e --argjson want "$want" '.machine.nproc > 0 and (.runs | length) == $want' \
  "$OUT/results.json" > /dev/null

# One case again on a single member (--members=1).
OUT1="${TEST_TMPDIR:-/tmp}/compare-smoke-1"
LOCKD_BENCH="$(pwd)/bench/loadgen/lockd-bench" \
  "$HERE/run.sh" --smoke --systems=etcd --members=1 --cases=put-1c --out="$OUT1"
jq -e '.machine.members == 1 and (.runs | length) == 1 and
       .runs[0].errors_total == 0' "$OUT1/results.json" > /dev/null ||
  { echo "FAIL: --members=1 did not give one error-free put-1c run"; exit 1; }
grep -q '^| put-1c | 1/1 | [0-9]' "$OUT1/summary.md" ||
  { echo "FAIL: the one-member summary lacks the put-1c row"; cat "$OUT1/summary.md"; exit 1; }
echo PASS
