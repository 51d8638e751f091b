#!/usr/bin/env bash
# The whole test suite: installs what is needed (if missing), checks
# formatting, then builds and runs every test optimized (as lockd ships; the
# simulator's build below is then already done) and under AddressSanitizer +
# UndefinedBehaviorSanitizer (a debug build, assertions on).
#
# Options (or environment):
#   --quick          the optimized pass only (LOCKD_TEST_QUICK=1)
#   --long           long simulation/soak runs instead of CI-sized ones
#                    (LOCKD_TEST_LONG=1): 100,000 simulator seeds (see
#                    tests/sim/README.md for a million overnight); the full
#                    reconfiguration test, 3 -> 5 -> 9 -> 3 and the same
#                    against Debian's etcd 3.4 side by side (reconfig_test)
# LOCKD_SIM_SEEDS overrides the number of simulator seeds (default 3000).
set -uo pipefail
cd "$(dirname "$0")/.."

quick=${LOCKD_TEST_QUICK:-0}
long=${LOCKD_TEST_LONG:-0}
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --long) long=1 ;;
    *) echo "test: unknown option $arg (use --quick or --long)" >&2; exit 2 ;;
  esac
done

scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }
scripts/check_format.sh || exit 1
scripts/check_layering.sh || exit 1

extra=()
[ "$long" = 1 ] && extra+=(--test_env=LOCKD_TEST_LONG=1 --test_timeout=36000)

configs=(opt)
[ "$quick" = 1 ] || configs+=(asan)

passed=0
failed=0
status=0
for config in "${configs[@]}"; do
  flags=()
  [ "$config" = default ] || flags+=("--config=$config")
  echo "test: bazel test ${flags[*]} //... (${config})" >&2
  log=$(mktemp)
  # Compiles come from the cache; tests always run.
  bazel test "${flags[@]}" "${extra[@]}" --nocache_test_results \
    --test_summary=short //... 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  p=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" || true)
  f=$(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log" || true)
  rm -f "$log"
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ]; then
    status=1
    [ "$f" -eq 0 ] && failed=$((failed + 1))  # a build failure counts
  fi
done

# The raft simulator, optimized, over a fixed range of seeds (a failure
# prints the seed and the command that replays it).
sim_seeds=${LOCKD_SIM_SEEDS:-3000}
[ "$long" = 1 ] && sim_seeds=${LOCKD_SIM_SEEDS:-100000}
echo "test: raft simulator, seeds 1..${sim_seeds} (optimized build)" >&2
sim_log=$(mktemp)
if bazel run --config=opt --noshow_progress //tests/sim:raft_sim -- \
    --seeds="$sim_seeds" --start=1 > "$sim_log" 2>&1; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  status=1
  grep -E 'FAIL|seed' "$sim_log" | head -20 >&2
fi
echo "test: raft simulator: $(tail -n 1 "$sim_log")" >&2
rm -f "$sim_log"

echo "lockd tests (${configs[*]}, simulator): ${passed} passed, ${failed} failed"
exit $status
