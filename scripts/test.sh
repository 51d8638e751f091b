#!/usr/bin/env bash
# The whole test suite: installs what is needed (if missing), checks
# formatting, then builds and runs every test in the default configuration
# and under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Options (or environment):
#   --quick          default configuration only (LOCKD_TEST_QUICK=1)
#   --long           long simulation/soak runs instead of CI-sized ones
#                    (LOCKD_TEST_LONG=1); see README.md
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

configs=(default)
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

echo "lockd tests (${configs[*]}): ${passed} passed, ${failed} failed"
exit $status
