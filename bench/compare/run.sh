#!/usr/bin/env bash
# Side-by-side comparison of lockd and etcd 3.4 on this machine: starts a
# cluster of each (3 members unless --members says otherwise; durable,
# loopback, ports below 32768), runs every
# workload of lockd-bench on each system in alternation (A B, then B A, ...)
# for several rounds, and writes into the output directory:
#   machine.json    cores, CPU model, memory, kernel, fsync latency probe
#   results.jsonl   one lockd-bench JSON report per run, tagged with
#                   system, case and round
#   results.json    {"machine": ..., "runs": [...]}
#   summary.md      medians per case and system, lockd/etcd ratios
#   *.png           charts, when gnuplot is installed
#   logs/           member and loadgen logs
#
# usage: bench/compare/run.sh [--systems=etcd,lockd] [--members=3] [--rounds=3]
#          [--duration=30s] [--datascale-keys=100000[,1000000]]
#          [--cases=a,b,...]
#          [--out=.bench-out] [--smoke] [--keep]
#
# Environment: BAZEL (default "bazel") to build with, e.g.
#   BAZEL="bazel --output_base=/root/.cache/bazel-bench"; LOCKD_BENCH to use a
#   prebuilt lockd-bench; LOCKD_BIN (default bazel-bin/lockd/lockd); ETCD_BIN
#   (default /usr/bin/etcd).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SYSTEMS="etcd,lockd"
MEMBERS=3
ROUNDS=3
DURATION=30s
DATASCALE_KEYS=100000
CASES=""
OUT="$ROOT/.bench-out"
SMOKE=0
KEEP=0
ETCD_BIN="${ETCD_BIN:-/usr/bin/etcd}"
ETCDCTL_BIN="${ETCDCTL_BIN:-/usr/bin/etcdctl}"
LOCKD_BIN="${LOCKD_BIN:-$ROOT/bazel-bin/lockd/lockd}"
BAZEL="${BAZEL:-bazel}"

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

for arg in "$@"; do
  case "$arg" in
    --systems=*) SYSTEMS="${arg#*=}" ;;
    --members=*) MEMBERS="${arg#*=}" ;;
    --rounds=*) ROUNDS="${arg#*=}" ;;
    --duration=*) DURATION="${arg#*=}" ;;
    --datascale-keys=*) DATASCALE_KEYS="${arg#*=}" ;;
    --cases=*) CASES="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    --smoke) SMOKE=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $arg" >&2; usage 2 >&2 ;;
  esac
done
if [[ $SMOKE == 1 ]]; then
  ROUNDS=1
  DURATION=1s
  DATASCALE_KEYS=2000
fi
[[ $MEMBERS =~ ^[1-9]$ && $((MEMBERS % 2)) == 1 ]] ||
  { echo "--members must be 1, 3, 5, 7 or 9 (an odd number), got $MEMBERS" >&2; exit 2; }
IFS=',' read -r -a SYSTEM_LIST <<< "$SYSTEMS"
for s in "${SYSTEM_LIST[@]}"; do
  [[ $s == etcd || $s == lockd ]] || { echo "unknown system: $s" >&2; exit 2; }
done

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# On a fresh machine, install what the comparison needs first (the build,
# etcd, jq, gnuplot for the charts); the smoke run inside the test suite
# relies on the suite's own setup.
if [[ $SMOKE == 0 ]]; then
  "$ROOT/scripts/setup.sh" || die "setup failed; see the messages above"
fi
command -v jq > /dev/null || die "jq is required: run scripts/setup.sh (or apt-get install -y jq)"
[[ -x $ETCD_BIN ]] || die "$ETCD_BIN not found (apt-get install -y etcd-server)"
[[ -x $ETCDCTL_BIN ]] || die "$ETCDCTL_BIN not found (apt-get install -y etcd-client)"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SCRATCH="$OUT/scratch"
LOGS="$OUT/logs"
rm -rf "$SCRATCH" "$LOGS"
mkdir -p "$SCRATCH" "$LOGS"
: > "$OUT/results.jsonl"

# --- the load generator -------------------------------------------------------
if [[ -z ${LOCKD_BENCH:-} ]]; then
  log "building lockd-bench (opt)"
  (cd "$ROOT" && $BAZEL build --config=opt --experimental_convenience_symlinks=ignore \
      //bench/loadgen:lockd-bench >&2)
  LOCKD_BENCH="$(cd "$ROOT" && $BAZEL info --config=opt bazel-bin 2> /dev/null)/bench/loadgen/lockd-bench"
fi
[[ -x $LOCKD_BENCH ]] || die "lockd-bench not found at $LOCKD_BENCH"

# --- machine ------------------------------------------------------------------
# fsync latency: 4 KiB writes, each synced (O_DSYNC) before the next, on the
# filesystem that holds the members' data.
fsync_probe_us() {
  local n=$1 f="$SCRATCH/fsync-probe" t0 t1
  t0=$(date +%s%N)
  dd if=/dev/zero of="$f" bs=4k count="$n" oflag=dsync status=none
  t1=$(date +%s%N)
  rm -f "$f"
  echo $(( (t1 - t0) / n / 1000 ))
}
FSYNC_N=$([[ $SMOKE == 1 ]] && echo 50 || echo 500)
FSYNC_US=$(fsync_probe_us "$FSYNC_N")
jq -n \
  --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg host "$(hostname)" \
  --arg cpu "$(lscpu 2> /dev/null | sed -n 's/^Model name: *//p' | head -1)" \
  --argjson nproc "$(nproc)" \
  --argjson cores "$(lscpu -p=core 2> /dev/null | grep -v '^#' | sort -u | wc -l)" \
  --argjson mem_mb "$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)" \
  --arg kernel "$(uname -r)" \
  --arg fs "$(df -T "$SCRATCH" | awk 'NR==2 {print $2}')" \
  --argjson fsync_us "$FSYNC_US" \
  --argjson fsync_n "$FSYNC_N" \
  --arg etcd "$("$ETCD_BIN" --version | head -1)" \
  --arg git "$(cd "$ROOT" && git rev-parse --short HEAD 2> /dev/null || echo unknown)" \
  --arg duration "$DURATION" --argjson rounds "$ROUNDS" \
  --argjson members "$MEMBERS" \
  --arg cpuidle "$(cat /sys/devices/system/cpu/cpuidle/current_driver 2> /dev/null || echo unknown)" \
  --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
  '{date: $date, host: $host, cpu: $cpu, nproc: $nproc, cores: $cores,
    mem_mb: $mem_mb, kernel: $kernel, filesystem: $fs,
    fsync_4k_dsync_us: $fsync_us, fsync_probe_writes: $fsync_n,
    etcd_version: $etcd, lockd_commit: $git, duration: $duration,
    rounds: $rounds, members: $members, cpuidle_driver: $cpuidle,
    loadavg_at_start: $loadavg}' > "$OUT/machine.json"
log "machine: $(jq -c . "$OUT/machine.json")"
if awk -v n="$(nproc)" '{exit !($1 > n)}' /proc/loadavg; then
  log "warning: load average $(cut -d' ' -f1 /proc/loadavg) exceeds $(nproc) CPUs; figures will be low and noisy"
fi

# --- ports ----------------------------------------------------------------------
# Sets PORT to a random port in 20000-31999 (below the kernel's ephemeral
# range), free now and not handed out earlier in this run. Not a $(...)
# function: the record of taken ports must survive the call.
declare -A TAKEN_PORTS=()
PORT=0
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    [[ -n ${TAKEN_PORTS[$p]:-} ]] && continue
    if [[ -z $(ss -Htan "( sport = :$p )" 2> /dev/null) ]]; then
      TAKEN_PORTS[$p]=1
      PORT=$p
      return
    fi
  done
}

# --- clusters -------------------------------------------------------------------
# Each start_<system> sets, for the cluster named $1:
#   ENDPOINTS_<name>  comma-separated client endpoints
#   PIDS_<name>       comma-separated member PIDs
#   DIRS_<name>       comma-separated data dirs
declare -A ENDPOINTS=() PIDS=() DIRS=()

start_etcd() {
  local name=$1 i token="bench-$1-$$" cluster="" eps="" pids="" dirs=""
  local -a cports=() pports=()
  for ((i = 1; i <= MEMBERS; i++)); do
    free_port; cports[i]=$PORT
    free_port; pports[i]=$PORT
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
  done
  for ((i = 1; i <= MEMBERS; i++)); do
    local dir="$SCRATCH/$name/m$i"
    mkdir -p "$dir"
    # Durable (etcd fsyncs its WAL by default). The quota is raised so long
    # runs do not hit etcd's 2 GiB default and its NOSPACE alarm.
    "$ETCD_BIN" --name "m$i" --data-dir "$dir" \
      --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-token "$token" \
      --initial-cluster-state new \
      --quota-backend-bytes 8589934592 \
      > "$LOGS/$name-m$i.log" 2>&1 &
    pids+="${pids:+,}$!"
    eps+="${eps:+,}127.0.0.1:${cports[$i]}"
    dirs+="${dirs:+,}$dir"
  done
  ENDPOINTS[$name]=$eps PIDS[$name]=$pids DIRS[$name]=$dirs
}

# >>> lockd hook ------------------------------------------------------------------
# lockd takes etcd's member flags. Adjust here when lockd's flags change.
start_lockd() {
  local name=$1 i token="bench-$1-$$" cluster="" eps="" pids="" dirs=""
  local -a cports=() pports=()
  [[ -x $LOCKD_BIN ]] || die "$LOCKD_BIN not found; build //lockd:lockd or pass --systems=etcd"
  for ((i = 1; i <= MEMBERS; i++)); do
    free_port; cports[i]=$PORT
    free_port; pports[i]=$PORT
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
  done
  for ((i = 1; i <= MEMBERS; i++)); do
    local dir="$SCRATCH/$name/m$i"
    mkdir -p "$dir"
    "$LOCKD_BIN" --name "m$i" --data-dir "$dir" \
      --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-token "$token" \
      > "$LOGS/$name-m$i.log" 2>&1 &
    pids+="${pids:+,}$!"
    eps+="${eps:+,}127.0.0.1:${cports[$i]}"
    dirs+="${dirs:+,}$dir"
  done
  ENDPOINTS[$name]=$eps PIDS[$name]=$pids DIRS[$name]=$dirs
}
# <<< lockd hook ------------------------------------------------------------------

# Ready when every member answers Maintenance.Status and they agree on a
# leader.
wait_ready() {
  local name=$1 deadline=$(( $(date +%s) + 60 )) leaders
  while (( $(date +%s) < deadline )); do
    local pid
    for pid in ${PIDS[$name]//,/ }; do
      kill -0 "$pid" 2> /dev/null || die "$name: member $pid exited; see $LOGS/$name-*.log"
    done
    leaders=$(ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints="${ENDPOINTS[$name]}" \
        --command-timeout=2s endpoint status -w json 2> /dev/null |
      jq -r --argjson n "$MEMBERS" '[.[].Status.leader] | select(length == $n) | unique |
             select(length == 1 and .[0] != 0) | .[0]' 2> /dev/null || true)
    if [[ -n $leaders ]]; then
      log "$name ready: ${ENDPOINTS[$name]} (pids ${PIDS[$name]})"
      return 0
    fi
    sleep 0.2
  done
  die "$name: no leader within 60s; see $LOGS/$name-*.log"
}

start_cluster() {  # system name
  "start_$1" "$2"
  wait_ready "$2"
}

stop_cluster() {
  local name=$1 pid
  [[ -n ${PIDS[$name]:-} ]] || return 0
  for pid in ${PIDS[$name]//,/ }; do kill "$pid" 2> /dev/null || true; done
  for pid in ${PIDS[$name]//,/ }; do wait "$pid" 2> /dev/null || true; done
  unset "PIDS[$name]"
}

cleanup() {
  local name
  for name in "${!PIDS[@]}"; do stop_cluster "$name"; done
  [[ $KEEP == 1 ]] || rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- workloads ------------------------------------------------------------------
# case name | lockd-bench arguments. Same key and value sizes for both systems.
COMMON="--key-size=8 --val-size=256"
declare -a CASE_LIST=(
  "put-1c|put --conns=1 --clients=1 --key-space-size=100000 --target-leader"
  "put-200c|put --conns=50 --clients=200 --key-space-size=100000"
  "txn-put-200c|txn-put --conns=50 --clients=200 --key-space-size=100000"
  "range-l-100c|range --consistency=l --conns=10 --clients=100 --key-space-size=100000"
  "range-s-100c|range --consistency=s --conns=10 --clients=100 --key-space-size=100000"
  "lease-keepalive-100c|lease-keepalive --conns=10 --clients=100"
  "lock-contended-10w|lock --conns=10 --clients=10 --lock-names=1"
  "lock-contended-50w|lock --conns=10 --clients=50 --lock-names=1"
  "lock-uncontended-50c|lock --conns=10 --clients=50 --lock-names=50"
  "watch-1000w|watch --conns=10 --clients=10 --rate=1000 --watchers=1000 --watch-streams=10 --key-space-size=100"
  "watch-latency-100w|watch-latency --conns=10 --clients=1 --rate=100 --watchers=100 --watch-streams=10 --key-space-size=100"
  "mixed-100c|mixed --conns=10 --clients=100 --read-percent=90 --watchers=100 --watch-streams=10 --key-space-size=10000"
)
DATASCALE_ARGS="datascale --conns=10 --clients=100"

want_case() {
  [[ -z $CASES ]] && return 0
  [[ ",$CASES," == *",$1,"* ]]
}

# Writes results.json and summary.md from what has run so far.
finish() {
  jq --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '. + {loadavg_at_end: $load}' \
    "$OUT/machine.json" > "$OUT/machine.json.tmp" && mv "$OUT/machine.json.tmp" "$OUT/machine.json"
  jq -s --slurpfile machine "$OUT/machine.json" '{machine: $machine[0], runs: .}' \
    "$OUT/results.jsonl" > "$OUT/results.json"
  if [[ -s $OUT/results.jsonl ]]; then
    "$ROOT/bench/compare/summarize.sh" "$OUT"
  fi
}

# A member that died makes every later figure of its cluster meaningless:
# stop, keeping what was measured before.
check_alive() {
  local name=$1 pid
  for pid in ${PIDS[$name]//,/ }; do
    if ! kill -0 "$pid" 2> /dev/null; then
      log "error: $name member $pid is gone (see $LOGS/$name-*.log); stopping"
      finish
      exit 1
    fi
  done
}

# run_case system cluster-name case args round [extra...]
run_case() {
  local system=$1 name=$2 case=$3 args=$4 round=$5; shift 5
  local json rc=0
  check_alive "$name"
  log "round $round  $system  $case"
  # shellcheck disable=SC2086
  json=$("$LOCKD_BENCH" $args $COMMON "$@" --endpoints="${ENDPOINTS[$name]}" \
      --pids="${PIDS[$name]}" --format=json --label="$system/$case/r$round" \
      2>> "$LOGS/lockd-bench.log") || rc=$?
  check_alive "$name"
  if [[ -z $json ]] || ! jq -e . <<< "$json" > /dev/null 2>&1; then
    log "  $system $case failed (exit $rc); see $LOGS/lockd-bench.log"
    return 0
  fi
  # The 1-minute load average right after the run tells whether something
  # else was competing for the machine.
  jq -c --arg system "$system" --arg case "$case" --argjson round "$round" \
    --argjson exit "$rc" --argjson load "$(cut -d' ' -f1 /proc/loadavg)" \
    '. + {system: $system, case: $case, round: $round, exit_code: $exit,
          loadavg_1m_after: $load}' <<< "$json" >> "$OUT/results.jsonl"
  jq -r '"  \(.throughput | floor) ops/s  p50 \(.latency_ms.p50) ms  p99 \(.latency_ms.p99) ms  errors \(.errors_total)"' \
    <<< "$json" >&2
}

# Alternate which system goes first each round, so neither always runs on a
# warmer machine.
order_for_round() {
  local round=$1
  if (( round % 2 == 1 )); then
    echo "${SYSTEM_LIST[@]}"
  else
    local i out=""
    for (( i=${#SYSTEM_LIST[@]}-1; i>=0; i-- )); do out+="${SYSTEM_LIST[$i]} "; done
    echo "$out"
  fi
}

# Both clusters run side by side through the throughput rounds; an idle
# cluster costs only heartbeats.
for s in "${SYSTEM_LIST[@]}"; do start_cluster "$s" "$s"; done

for (( round=1; round<=ROUNDS; round++ )); do
  for entry in "${CASE_LIST[@]}"; do
    case=${entry%%|*}
    args=${entry#*|}
    want_case "$case" || continue
    for s in $(order_for_round "$round"); do
      run_case "$s" "$s" "$case" "$args" "$round" --duration="$DURATION"
    done
  done
done
for s in "${SYSTEM_LIST[@]}"; do stop_cluster "$s"; done

# Memory and disk after loading keys: a fresh cluster per system and round,
# so earlier runs' history does not count.
if want_case datascale; then
  for keys in ${DATASCALE_KEYS//,/ }; do
    for (( round=1; round<=ROUNDS; round++ )); do
      for s in $(order_for_round "$round"); do
        name="$s-datascale-$keys-r$round"
        start_cluster "$s" "$name"
        run_case "$s" "$name" "datascale-$keys" "$DATASCALE_ARGS" "$round" \
          --total="$keys" --data-dirs="${DIRS[$name]}"
        stop_cluster "$name"
        rm -rf "${SCRATCH:?}/${name:?}"
      done
    done
  done
fi

finish
log "wrote $OUT/summary.md, $OUT/results.json"
cat "$OUT/summary.md"
