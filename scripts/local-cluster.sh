#!/usr/bin/env bash
# Runs lockd members on this machine, for trying out membership changes.
#
#   scripts/local-cluster.sh start [N]   start N members (default 3), m1..mN;
#                                        restarts stopped ones if DIR exists
#   scripts/local-cluster.sh add NAME    start one more member that joins the
#                                        running cluster (it waits until it is
#                                        added; see below); prints its flags
#   scripts/local-cluster.sh stop [NAME] stop all members (or one), SIGTERM
#   scripts/local-cluster.sh status      which members run, and
#                                        `lockctl endpoint status --cluster`
#   scripts/local-cluster.sh members     the --members value for `lockctl
#                                        cluster resize` naming every member
#                                        this script started
#
# Environment:
#   LOCKD_DIR   where data dirs, logs and pid files go (default
#               /tmp/lockd-local-$USER); `rm -rf` it to start over
#   LOCKD_PORT  first client port (default 22379); member i listens for
#               clients on LOCKD_PORT+10*(i-1) and for peers one above; all
#               ports stay below 32768 (the kernel's ephemeral range)
#   LOCKD, LOCKCTL  the binaries (default bazel-bin/lockd/{lockd,lockctl}
#               of this repository; `bazel build //lockd:all` first)
#
# Growing from 3 to 5 and back, with a live cluster:
#   scripts/local-cluster.sh start 3
#   scripts/local-cluster.sh add m4; scripts/local-cluster.sh add m5
#   bazel-bin/lockd/lockctl --endpoints=127.0.0.1:22379 cluster resize \
#       --members="$(scripts/local-cluster.sh members)"
#   bazel-bin/lockd/lockctl --endpoints=127.0.0.1:22379 cluster resize \
#       --members=m2=http://127.0.0.1:22390,m3=...,m4=...   # drops m1, m5
# A member started with `add` keeps asking the cluster until `cluster
# resize` (or `lockctl member add`) adds it (lockd --join-timeout, 5m).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${LOCKD_DIR:-/tmp/lockd-local-${USER:-$(id -un)}}"
BASE_PORT="${LOCKD_PORT:-22379}"
LOCKD="${LOCKD:-$ROOT/bazel-bin/lockd/lockd}"
LOCKCTL="${LOCKCTL:-$ROOT/bazel-bin/lockd/lockctl}"
# One line per member ever started here: "NAME CLIENT_PORT PEER_PORT".
REGISTRY="$DIR/members.txt"

die() { echo "local-cluster: $*" >&2; exit 1; }

need_binaries() {
  [[ -x "$LOCKD" ]] || die "no lockd at $LOCKD: run 'bazel build //lockd:all' (or set LOCKD)"
  [[ -x "$LOCKCTL" ]] || die "no lockctl at $LOCKCTL: run 'bazel build //lockd:all' (or set LOCKCTL)"
}

pid_of() { cat "$DIR/$1.pid" 2>/dev/null || true; }
running() { local p; p="$(pid_of "$1")"; [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

# Starts member NAME (registered) with the given --initial-cluster* flags.
launch() {
  local name="$1" client="$2" peer="$3"; shift 3
  if running "$name"; then echo "$name already running (pid $(pid_of "$name"))"; return; fi
  local flags=(--name="$name" --data-dir="$DIR/$name"
    --listen-client-urls="http://127.0.0.1:$client"
    --advertise-client-urls="http://127.0.0.1:$client"
    --listen-peer-urls="http://127.0.0.1:$peer"
    --initial-advertise-peer-urls="http://127.0.0.1:$peer" "$@")
  echo "$name: $LOCKD ${flags[*]}"
  # The flags of the first start: a restart reuses them (a restarted member
  # ignores --initial-cluster*, its data directory knows who it is).
  [[ -f "$DIR/$name.flags" ]] || printf '%s\n' "${flags[@]}" >"$DIR/$name.flags"
  mapfile -t flags <"$DIR/$name.flags"
  nohup "$LOCKD" "${flags[@]}" >>"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

cmd_start() {
  local n="${1:-3}"
  need_binaries
  mkdir -p "$DIR"
  if [[ ! -f "$REGISTRY" ]]; then
    [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$n" -le 9 ]] || die "N must be 1..9"
    local i cluster=""
    for ((i = 1; i <= n; i++)); do
      local c=$((BASE_PORT + 10 * (i - 1)))
      echo "m$i $c $((c + 1))" >>"$REGISTRY"
      cluster+="${cluster:+,}m$i=http://127.0.0.1:$((c + 1))"
    done
    while read -r name client peer; do
      launch "$name" "$client" "$peer" --initial-cluster="$cluster" \
        --initial-cluster-state=new
    done <"$REGISTRY"
  else
    echo "restarting the members registered in $REGISTRY"
    while read -r name client peer; do launch "$name" "$client" "$peer"; done <"$REGISTRY"
  fi
  echo "logs: $DIR/NAME.log; try: $LOCKCTL --endpoints=127.0.0.1:$BASE_PORT endpoint status --cluster -w table"
}

cmd_add() {
  local name="${1:-}"
  [[ -n "$name" ]] || die "usage: local-cluster.sh add NAME"
  need_binaries
  [[ -f "$REGISTRY" ]] || die "no cluster in $DIR: run 'local-cluster.sh start' first"
  grep -q "^$name " "$REGISTRY" && die "$name is registered already (a restart: 'local-cluster.sh start')"
  local last client peer cluster=""
  last="$(awk '{print $2}' "$REGISTRY" | sort -n | tail -1)"
  client=$((last + 10)); peer=$((client + 1))
  ((peer < 32768)) || die "out of ports below 32768"
  while read -r n c p; do cluster+="${cluster:+,}$n=http://127.0.0.1:$p"; done <"$REGISTRY"
  echo "$name $client $peer" >>"$REGISTRY"
  launch "$name" "$client" "$peer" --initial-cluster="$cluster,$name=http://127.0.0.1:$peer" \
    --initial-cluster-state=existing
  echo "$name waits to be added; add it with:"
  echo "  $LOCKCTL --endpoints=127.0.0.1:$BASE_PORT member add $name --learner --peer-urls=http://127.0.0.1:$peer"
  echo "or name it in: $LOCKCTL --endpoints=127.0.0.1:$BASE_PORT cluster resize --members=\"\$($0 members)\""
}

cmd_stop() {
  [[ -f "$REGISTRY" ]] || die "no cluster in $DIR"
  local only="${1:-}" name client peer
  while read -r name client peer; do
    [[ -z "$only" || "$only" == "$name" ]] || continue
    if running "$name"; then
      local p; p="$(pid_of "$name")"
      kill -TERM "$p"
      local t
      for ((t = 0; t < 100; t++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$p" 2>/dev/null && { echo "$name did not stop in 10s; SIGKILL"; kill -KILL "$p"; }
      echo "$name stopped"
    fi
    rm -f "$DIR/$name.pid"
  done <"$REGISTRY"
}

cmd_status() {
  [[ -f "$REGISTRY" ]] || die "no cluster in $DIR"
  local name client peer eps=""
  while read -r name client peer; do
    if running "$name"; then
      echo "$name running (pid $(pid_of "$name")) client 127.0.0.1:$client peer :$peer"
      eps+="${eps:+,}127.0.0.1:$client"
    else
      echo "$name stopped"
    fi
  done <"$REGISTRY"
  if [[ -n "$eps" ]]; then
    "$LOCKCTL" --endpoints="$eps" endpoint status --cluster -w table || true
  fi
}

cmd_members() {
  [[ -f "$REGISTRY" ]] || die "no cluster in $DIR"
  local out="" name client peer
  while read -r name client peer; do out+="${out:+,}$name=http://127.0.0.1:$peer"; done <"$REGISTRY"
  echo "$out"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  add) shift; cmd_add "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) cmd_status ;;
  members) cmd_members ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
