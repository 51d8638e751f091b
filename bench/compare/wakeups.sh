#!/usr/bin/env bash
# Counts what each thread of some running processes did per operation while a
# command ran: voluntary context switches (a thread went to sleep: each is
# later a wake-up), involuntary ones, and CPU time. Threads are grouped by
# name within each process. On a shared VM these counts barely move from run
# to run while throughput does, so they show whether a change removed work.
#
#   bench/compare/wakeups.sh --pids=PID[,PID...] --ops=N -- COMMAND [ARG...]
#
# Example (a 3-member cluster from scripts/local-cluster.sh, 3,000 puts to
# the leader):
#
#   bench/compare/wakeups.sh --pids="$(cat /tmp/lockd-local-root/m*.pid | paste -sd,)" \
#     --ops=3000 -- bazel-bin/bench/loadgen/lockd-bench put --total=3000 \
#     --key-space-size=100000 --target-leader \
#     --endpoints=127.0.0.1:22379,127.0.0.1:22389,127.0.0.1:22399
set -euo pipefail

die() {
  echo "wakeups.sh: $*" >&2
  exit 2
}

PIDS=""
OPS=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --pids=*) PIDS=${1#--pids=} ;;
    --ops=*) OPS=${1#--ops=} ;;
    --) shift; break ;;
    *) die "unknown argument $1 (usage: --pids=PID[,PID...] --ops=N -- COMMAND...)" ;;
  esac
  shift
done
[[ -n $PIDS ]] || die "--pids is required"
[[ $OPS =~ ^[1-9][0-9]*$ ]] || die "--ops must be a positive number of operations"
[[ $# -gt 0 ]] || die "no command given after --"

# One line per thread: pid tid name voluntary involuntary cpu_ticks.
snapshot() {
  local pid t name vol invol stat
  for pid in ${PIDS//,/ }; do
    [[ -d /proc/$pid ]] || die "no process $pid"
    for t in /proc/"$pid"/task/*; do
      name=$(tr ' ' '_' 2> /dev/null < "$t/comm") || continue
      vol=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status" 2> /dev/null) || continue
      invol=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status" 2> /dev/null) || continue
      # utime and stime are fields 14 and 15; the name (field 2) may hold
      # spaces, so count from after its closing parenthesis.
      stat=$(sed 's/.*) //' "$t/stat" 2> /dev/null | awk '{print $12 + $13}') || continue
      echo "$pid ${t##*/} $name $vol $invol $stat"
    done
  done
}

before=$(mktemp)
after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
snapshot > "$before"
"$@"
snapshot > "$after"

HZ=$(getconf CLK_TCK)
awk -v ops="$OPS" -v hz="$HZ" '
  NR == FNR { v[$1 " " $2] = $4; n[$1 " " $2] = $5; c[$1 " " $2] = $6; next }
  {
    k = $1 " " $2; g = $1 " " $3
    dv[g] += $4 - v[k]; dn[g] += $5 - n[k]; dc[g] += $6 - c[k]
    tv[$1] += $4 - v[k]; tc[$1] += $6 - c[k]
  }
  END {
    printf "%-8s %-18s %10s %10s %12s\n", "pid", "thread", "vol/op", "invol/op", "cpu µs/op"
    for (g in dv) {
      if (dv[g] == 0 && dn[g] == 0 && dc[g] == 0) continue
      split(g, f, " ")
      printf "%-8s %-18s %10.2f %10.2f %12.1f\n", f[1], f[2], dv[g] / ops, dn[g] / ops, dc[g] * 1e6 / hz / ops | "sort"
    }
    close("sort")
    for (q in tv) printf "%-8s %-18s %10.2f %10s %12.1f\n", q, "(all)", tv[q] / ops, "", tc[q] * 1e6 / hz / ops
  }' "$before" "$after"
