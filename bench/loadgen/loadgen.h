// lockd-bench: a load generator speaking the etcd v3 gRPC API, so one binary
// drives lockd and etcd alike.
//
//   lockd-bench <workload> [--flag=value ...]
//
// Workloads: put, range, txn-put, lease-keepalive, watch, watch-latency,
// lock, mixed, datascale. Each run prints one report (text, or one JSON
// object per line with --format=json).
#ifndef BENCH_LOADGEN_LOADGEN_H_
#define BENCH_LOADGEN_LOADGEN_H_

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/loadgen/histogram.h"

namespace lockd_bench {

struct Config {
  std::string workload;
  std::vector<std::string> endpoints = {"127.0.0.1:2379"};
  uint64_t conns = 1;    // gRPC channels (each its own TCP connection)
  uint64_t clients = 1;  // concurrent in-flight requests / streams
  uint64_t total = 0;    // requests; 0 with duration 0 means 10000
  absl::Duration duration = absl::ZeroDuration();
  uint64_t rate = 0;  // requests per second over all clients; 0: unlimited
  uint64_t key_size = 8;
  uint64_t val_size = 256;
  uint64_t key_space_size = 1;
  bool sequential_keys = false;
  bool target_leader = false;
  std::string format = "text";
  absl::Duration request_timeout = absl::Seconds(30);
  uint64_t seed = 1;
  // Member PIDs whose CPU time (all workloads) and RSS (datascale) to report.
  std::vector<int> pids;
  std::vector<std::string> data_dirs;  // datascale: sizes to report
  std::string label;                   // free text copied into the report

  std::string consistency = "l";  // range, mixed: l (linearizable) | s
  uint64_t watchers = 100;        // watch, watch-latency, mixed
  uint64_t watch_streams = 10;
  uint64_t lock_names = 1;     // lock: 1 = one contended lock
  int64_t lease_ttl_s = 600;   // lock: TTL of each waiter's lease
  uint64_t read_percent = 90;  // mixed: share of ranges, rest txn-put
};

struct Result {
  std::string workload;
  Config config;
  std::string endpoint_used;               // with --target-leader: the leader
  double duration_s = 0;                   // first request sent -> last answer
  uint64_t ops = 0;                        // successful operations
  std::map<std::string, uint64_t> errors;  // gRPC code name (or reason)
  Histogram latency_ns;                    // of successful operations
  // Further latency histograms (e.g. per op kind in mixed), by name.
  std::vector<std::pair<std::string, Histogram>> histograms_ns;
  // Workload-specific figures (events_per_s, rss_bytes, ...), in order.
  std::vector<std::pair<std::string, double>> metrics;
  double loadgen_cpu_pct = 0;  // of one core, over the measured phase

  uint64_t error_total() const;
  double throughput() const { return duration_s > 0 ? ops / duration_s : 0; }
};

// Runs one workload. Errors: kInvalidArgument for a bad configuration,
// kUnavailable when no endpoint answers (--target-leader), others from setup
// RPCs. Request failures during the run are counted in Result::errors, not
// returned.
[[nodiscard]] absl::StatusOr<Result> RunWorkload(const Config& config);

std::string FormatText(const Result& result);
// One JSON object, no newline.
std::string FormatJson(const Result& result);

// The whole command line tool; returns the process exit code (0 on success,
// 1 if the run had errors, 2 on bad usage or setup failure).
int Main(int argc, const char* const* argv, std::ostream& out,
         std::ostream& err);

}  // namespace lockd_bench

#endif  // BENCH_LOADGEN_LOADGEN_H_
