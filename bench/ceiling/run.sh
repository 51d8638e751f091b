#!/usr/bin/env bash
# What gRPC alone allows on this machine: starts lockd-ceiling (a server that
# answers the etcd v3 calls at once and stores nothing), drives it with
# lockd-bench using the same arguments as bench/compare/run.sh's cases that it
# can serve, and writes the medians to OUT/summary.md and OUT/medians.json.
#
# Server and load generator share the machine's cores, as in the comparison,
# so a case's figure here bounds what any server can reach in that case
# (lockd and etcd alike): requests per second, and the CPU a call costs the
# server and the load generator before any replication, disk or state.
#
# usage: bench/ceiling/run.sh [--rounds=3] [--duration=5s] [--out=DIR]
#          [--compare=DIR] [--smoke]
#   --compare=DIR  a bench/compare/run.sh output (its medians.json): adds
#                  etcd's and lockd's figures and each one's share of the
#                  ceiling
#
# Environment: LOCKD_BENCH and LOCKD_CEILING, prebuilt binaries (default:
# built with BAZEL, default "bazel", in --config=opt).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROUNDS=3
DURATION=5s
OUT="$ROOT/.bench-out/ceiling"
COMPARE=""
BAZEL="${BAZEL:-bazel}"
# The comparison's cases that need nothing but KV and lease calls.
CEILING_CASES="put-1c put-200c txn-put-200c range-l-100c range-s-100c lease-keepalive-100c"

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

for arg in "$@"; do
  case "$arg" in
    --rounds=*) ROUNDS="${arg#*=}" ;;
    --duration=*) DURATION="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    --compare=*) COMPARE="${arg#*=}" ;;
    --smoke) ROUNDS=1 DURATION=1s ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $arg" >&2; usage 2 >&2 ;;
  esac
done
for tool in jq awk; do
  command -v "$tool" > /dev/null || {
    echo "ceiling: $tool is missing: apt-get install $tool" >&2; exit 1; }
done
if [[ -n $COMPARE && ! -f $COMPARE/medians.json ]]; then
  echo "ceiling: no medians.json in $COMPARE: give the --out of a bench/compare/run.sh run" >&2
  exit 2
fi

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [[ -z ${LOCKD_BENCH:-} || -z ${LOCKD_CEILING:-} ]]; then
  log "building lockd-bench and lockd-ceiling (--config=opt)"
  (cd "$ROOT" && $BAZEL build --config=opt //bench/loadgen:lockd-bench \
      //bench/ceiling:lockd-ceiling >&2)
  LOCKD_BENCH="${LOCKD_BENCH:-$ROOT/bazel-bin/bench/loadgen/lockd-bench}"
  LOCKD_CEILING="${LOCKD_CEILING:-$ROOT/bazel-bin/bench/ceiling/lockd-ceiling}"
fi

# The comparison's arguments for a case, from its list (one source for both).
case_args() {
  local line
  line=$(grep -E "^  \"$1\|" "$ROOT/bench/compare/run.sh") || {
    echo "ceiling: case $1 is not in bench/compare/run.sh" >&2; exit 1; }
  line=${line#*|}
  line=${line%\"}
  # The ceiling has no leader to find.
  echo "${line/ --target-leader/}"
}
COMMON=$(sed -n 's/^COMMON="\(.*\)"$/\1/p' "$ROOT/bench/compare/run.sh")

mkdir -p "$OUT"
: > "$OUT/results.jsonl"
"$LOCKD_CEILING" --listen=127.0.0.1:0 > "$OUT/ceiling.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true' EXIT
ENDPOINT=""
for _ in $(seq 100); do
  ENDPOINT=$(sed -n 's/^listening on //p' "$OUT/ceiling.log")
  [[ -n $ENDPOINT ]] && break
  kill -0 "$SERVER" 2> /dev/null || break
  sleep 0.1
done
[[ -n $ENDPOINT ]] || {
  echo "ceiling: lockd-ceiling did not start; see $OUT/ceiling.log" >&2; exit 1; }
log "lockd-ceiling on $ENDPOINT (pid $SERVER)"

for (( round=1; round<=ROUNDS; round++ )); do
  for c in $CEILING_CASES; do
    log "round $round  $c"
    # shellcheck disable=SC2046
    json=$("$LOCKD_BENCH" $(case_args "$c") $COMMON --duration="$DURATION" \
        --endpoints="$ENDPOINT" --pids="$SERVER" --format=json \
        --label="ceiling/$c/r$round" 2>> "$OUT/lockd-bench.log") || {
      echo "ceiling: lockd-bench failed in $c; see $OUT/lockd-bench.log" >&2
      exit 1; }
    jq -c --arg case "$c" --argjson round "$round" \
      '. + {case: $case, round: $round}' <<< "$json" >> "$OUT/results.jsonl"
    jq -r '"  \(.throughput | floor) ops/s  server \(.metrics.server_cpu_us_per_op | floor) us/op  loadgen \(.metrics.loadgen_cpu_us_per_op | floor) us/op"' \
      <<< "$json" >&2
  done
done

# Medians per case; with --compare, the comparison's figures beside them.
jq -s --slurpfile cmp <(if [[ -n $COMPARE ]]; then cat "$COMPARE/medians.json"; else echo '[]'; fi) '
  def median: sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  group_by(.case) | map({
    case: .[0].case,
    runs: length,
    throughput: (map(.throughput) | median),
    p50_ms: (map(.latency_ms.p50) | median),
    server_cpu_us_per_op: (map(.metrics.server_cpu_us_per_op) | median),
    loadgen_cpu_us_per_op: (map(.metrics.loadgen_cpu_us_per_op) | median),
    errors: (map(.errors_total) | add)
  }) | map(. as $c | . + {
    etcd: ($cmp[0] | map(select(.case == $c.case)) | .[0].systems.etcd.throughput // null),
    lockd: ($cmp[0] | map(select(.case == $c.case)) | .[0].systems.lockd.throughput // null)
  })' "$OUT/results.jsonl" > "$OUT/medians.json"

{
  echo "# What gRPC alone allows here"
  echo
  echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs; lockd-ceiling (answers at once, stores nothing) driven by lockd-bench with bench/compare/run.sh's arguments; $ROUNDS round(s) of $DURATION; medians. CPU is µs per request, of the server and of the load generator, which share the machine."
  echo
  if [[ -n $COMPARE ]]; then
    echo "| case | ceiling ops/s | server CPU µs/op | loadgen CPU µs/op | etcd ops/s | etcd/ceiling | lockd ops/s | lockd/ceiling |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    jq -r '.[] | "| \(.case) | \(.throughput | floor) | \(.server_cpu_us_per_op | floor) | \(.loadgen_cpu_us_per_op | floor) | \(.etcd // 0 | floor) | \(if .etcd then (100 * .etcd / .throughput | floor | tostring) + "%" else "-" end) | \(.lockd // 0 | floor) | \(if .lockd then (100 * .lockd / .throughput | floor | tostring) + "%" else "-" end) |"' "$OUT/medians.json"
  else
    echo "| case | ceiling ops/s | p50 ms | server CPU µs/op | loadgen CPU µs/op | errors |"
    echo "|---|---:|---:|---:|---:|---:|"
    jq -r '.[] | "| \(.case) | \(.throughput | floor) | \(.p50_ms * 1000 | round / 1000) | \(.server_cpu_us_per_op | floor) | \(.loadgen_cpu_us_per_op | floor) | \(.errors) |"' "$OUT/medians.json"
  fi
} > "$OUT/summary.md"
cat "$OUT/summary.md"
