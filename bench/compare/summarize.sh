#!/usr/bin/env bash
# Turns a comparison run's results (results.jsonl, machine.json in DIR) into
# summary.md: medians per case and system over the rounds, and lockd/etcd
# ratios. With gnuplot installed, also draws throughput.png and latency.png.
#
# usage: bench/compare/summarize.sh DIR
set -euo pipefail
DIR=${1:?usage: summarize.sh DIR}
RESULTS="$DIR/results.jsonl"
MACHINE="$DIR/machine.json"
[[ -s $RESULTS ]] || { echo "no results in $RESULTS" >&2; exit 1; }
# Older runs' machine.json has no member count: they all had 3.
MEMBERS=$(jq -r '.members // 3' "$MACHINE" 2> /dev/null || echo 3)

# Medians per (case, system) as JSON, the input of the table and the charts.
jq -s '
  def median: sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  [to_entries[] | .value + {index: .key}] |
  group_by(.case) | sort_by(map(.index) | min) | map(
    {case: .[0].case, workload: .[0].workload,
     clients: .[0].config.clients, conns: .[0].config.conns,
     systems: (group_by(.system) | map({key: .[0].system, value: {
        runs: length,
        throughput: (map(.throughput) | median),
        p50_ms: (map(.latency_ms.p50) | median),
        p99_ms: (map(.latency_ms.p99) | median),
        p999_ms: (map(.latency_ms["p99.9"]) | median),
        max_ms: (map(.latency_ms.max) | median),
        errors: (map(.errors_total) | add),
        server_cpu_us_per_op: (map(.metrics.server_cpu_us_per_op // null) |
                               map(select(. != null)) | median),
        loadgen_cpu_pct: (map(.loadgen_cpu_pct) | median),
        rss_mb_per_member: (map(.metrics.rss_bytes_per_member // null) |
                            map(select(. != null)) | median |
                            if . == null then null else . / 1048576 end),
        data_dir_mb_per_member: (map(.metrics.data_dir_bytes_total // null) |
                            map(select(. != null)) | median |
                            if . == null then null else . / 1048576 / $members end)
     }}) | from_entries)})' --argjson members "$MEMBERS" "$RESULTS" \
  > "$DIR/medians.json"

# Keep the cases in the order they first ran.
ORDER=$(jq -r '.case' "$RESULTS" | awk '!seen[$0]++')

{
  echo "# lockd vs etcd"
  echo
  jq -r '"Run \(.date) on \(.cpu) — \(.nproc) CPUs (\(.cores) cores), \(.mem_mb) MB RAM, kernel \(.kernel), \(.filesystem); synced 4 KiB write \(.fsync_4k_dsync_us) µs (mean of \(.fsync_probe_writes)). \(.etcd_version); lockd \(.lockd_commit). Clusters of \(.members // 3) member(s) on loopback. \(.rounds) round(s) of \(.duration) per case, systems alternating; medians over rounds. Load average at start: \(.loadavg_at_start // "?"), at end: \(.loadavg_at_end // "?")."' "$MACHINE"
  echo
  echo "Throughput is ops/s (watch: events delivered/s; lock: acquisitions/s). Latency in ms: of each op; for watch, of the writer's puts; for watch-latency, from a put being sent to its event being received; for lock, of a whole Lock+Unlock cycle. CPU is µs of server CPU per op summed over the cluster's $MEMBERS member(s). Ratios are lockd/etcd."
  echo
  echo "| case | clients/conns | etcd ops/s | etcd p50 | etcd p99 | etcd CPU µs/op | lockd ops/s | lockd p50 | lockd p99 | lockd CPU µs/op | ops/s ratio | p99 ratio | errors etcd/lockd |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  while IFS= read -r c; do
    [[ $c == datascale-* ]] && continue
    jq -r --arg c "$c" '
      def f(d): if . == null then "—" else (. * pow(10; d) | round) / pow(10; d) | tostring end;
      def ratio(a; b): if a == null or b == null or b == 0 then "—"
                       else ((a / b * 100 | round) / 100 | tostring) + "x" end;
      .[] | select(.case == $c) | .systems as $s |
      "| \(.case) | \(.clients)/\(.conns) | \($s.etcd.throughput | f(0)) | \($s.etcd.p50_ms | f(2)) | \($s.etcd.p99_ms | f(2)) | \($s.etcd.server_cpu_us_per_op | f(0)) | \($s.lockd.throughput | f(0)) | \($s.lockd.p50_ms | f(2)) | \($s.lockd.p99_ms | f(2)) | \($s.lockd.server_cpu_us_per_op | f(0)) | \(ratio($s.lockd.throughput; $s.etcd.throughput)) | \(ratio($s.lockd.p99_ms; $s.etcd.p99_ms)) | \($s.etcd.errors // "—")/\($s.lockd.errors // "—") |"
    ' "$DIR/medians.json"
  done <<< "$ORDER"
  if grep -q '^datascale-' <<< "$ORDER"; then
    echo
    echo "| datascale | etcd RSS MB/member | etcd data dir MB/member | lockd RSS MB/member | lockd data dir MB/member | RSS ratio |"
    echo "|---|---:|---:|---:|---:|---:|"
    while IFS= read -r c; do
      [[ $c == datascale-* ]] || continue
      jq -r --arg c "$c" '
        def f: if . == null then "—" else (. * 10 | round) / 10 | tostring end;
        .[] | select(.case == $c) | .systems as $s |
        "| \(.case) keys | \($s.etcd.rss_mb_per_member | f) | \($s.etcd.data_dir_mb_per_member | f) | \($s.lockd.rss_mb_per_member | f) | \($s.lockd.data_dir_mb_per_member | f) | \(if $s.lockd.rss_mb_per_member == null or $s.etcd.rss_mb_per_member == null then "—" else (($s.lockd.rss_mb_per_member / $s.etcd.rss_mb_per_member * 100 | round) / 100 | tostring) + "x" end) |"
      ' "$DIR/medians.json"
    done <<< "$ORDER"
  fi
  echo
  echo "1-minute load average after each run: median $(jq -rs 'map(.loadavg_1m_after // empty) | sort | if length == 0 then "?" else .[length / 2 | floor] end' "$RESULTS"), max $(jq -rs 'map(.loadavg_1m_after // empty) | max // "?"' "$RESULTS") (the machine has $(jq -r .nproc "$MACHINE") CPUs; above that, something else competed)."
  echo
  echo "Loadgen CPU (median % of one core): $(jq -r '[.[] | .case as $c | .systems | to_entries[] | "\($c) \(.key) \(.value.loadgen_cpu_pct | round)%"] | join(", ")' "$DIR/medians.json")."
} > "$DIR/summary.md"

# Charts (optional): throughput and p50/p99 per case, one bar per system.
if command -v gnuplot > /dev/null; then
  jq -r '.[] | select(.case | startswith("datascale") | not) |
    [.case, (.systems.etcd.throughput // 0), (.systems.lockd.throughput // 0),
     (.systems.etcd.p50_ms // 0), (.systems.etcd.p99_ms // 0),
     (.systems.lockd.p50_ms // 0), (.systems.lockd.p99_ms // 0)] | @tsv' \
    "$DIR/medians.json" > "$DIR/medians.tsv"
  gnuplot <<EOF
set terminal pngcairo size 1200,600 noenhanced
set datafile separator "\t"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35
set grid ytics
set key top right
set output "$DIR/throughput.png"
set title "Throughput (ops/s, median)"
set logscale y
plot "$DIR/medians.tsv" using 2:xtic(1) title "etcd", '' using 3 title "lockd"
set output "$DIR/latency.png"
set title "Latency p50 / p99 (ms, median)"
plot "$DIR/medians.tsv" using 4:xtic(1) title "etcd p50", '' using 5 title "etcd p99", \
     '' using 6 title "lockd p50", '' using 7 title "lockd p99"
EOF
fi
