// The command line: flags in etcd benchmark's style, then one run.
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "bench/loadgen/loadgen.h"
#include "lockd/util/flags.h"

namespace lockd_bench {
namespace {

constexpr char kUsage[] =
    "usage: lockd-bench <workload> [flags]\n"
    "workloads:\n"
    "  put              puts of --val-size bytes to keys of the key space\n"
    "  range            single-key ranges (--consistency=l|s)\n"
    "  txn-put          txns with a compare (always true) and a put\n"
    "  lease-keepalive  one lease per client, kept alive over its own stream\n"
    "                   as fast as answers come back\n"
    "  watch            --watchers over --watch-streams on the key space "
    "while\n"
    "                   --clients put; events delivered per second\n"
    "  watch-latency    as watch; time from put sent to event received (and\n"
    "                   from put returned, in a second histogram)\n"
    "  lock             Lock+Unlock via v3lockpb; --lock-names=1 is one\n"
    "                   contended lock (hand-overs/s), N spreads clients\n"
    "  mixed            --read-percent ranges, rest txn-puts, watchers open\n"
    "  datascale        load --total keys, report RSS of --pids and size of\n"
    "                   --data-dirs\n"
    "flags:\n";

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    out.emplace_back(part.data(), part.size());
  }
  return out;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out,
         std::ostream& err) {
  // Debian's abseil keeps absl::Mutex deadlock detection on, and gRPC locks
  // absl::Mutexes on every call: its bookkeeping would be the load
  // generator's top cost.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Config c;
  std::string endpoints = "127.0.0.1:2379", pids, data_dirs;
  lockd::FlagSet fs("lockd-bench", "");
  fs.String("endpoints", &endpoints, "comma-separated gRPC endpoints");
  fs.Uint64("conns", &c.conns, "gRPC connections (channels)");
  fs.Uint64("clients", &c.clients,
            "concurrent requests (streams for lease-keepalive)");
  fs.Uint64("total", &c.total,
            "requests in all (keys for datascale); default 10000 unless "
            "--duration");
  fs.Duration("duration", &c.duration, "run for this long instead of --total");
  fs.Uint64("rate", &c.rate, "requests per second, 0 for unlimited");
  fs.Uint64("key-size", &c.key_size, "key size in bytes");
  fs.Uint64("val-size", &c.val_size, "value size in bytes");
  fs.Uint64("key-space-size", &c.key_space_size, "number of distinct keys");
  fs.Bool("sequential-keys", &c.sequential_keys,
          "walk the key space in order instead of at random");
  fs.Bool("target-leader", &c.target_leader,
          "send only to the leader (found via Maintenance.Status)");
  fs.String("format", &c.format, "text or json");
  fs.Duration("request-timeout", &c.request_timeout,
              "deadline of each request");
  fs.Uint64("seed", &c.seed, "seed for keys, values and op mix");
  fs.String("pids", &pids,
            "comma-separated member PIDs: CPU per op; RSS for datascale");
  fs.String("data-dirs", &data_dirs, "datascale: comma-separated data dirs");
  fs.String("label", &c.label, "free text copied into the report");
  fs.String("consistency", &c.consistency,
            "range/mixed: l (linearizable) or s (serializable)");
  fs.Uint64("watchers", &c.watchers, "watch/watch-latency/mixed: watchers");
  fs.Uint64("watch-streams", &c.watch_streams, "streams the watchers share");
  fs.Uint64("lock-names", &c.lock_names,
            "lock: distinct lock names (1 = one contended lock)");
  fs.Int64("lease-ttl", &c.lease_ttl_s, "lock: TTL in seconds of each lease");
  fs.Uint64("read-percent", &c.read_percent, "mixed: share of ranges");

  absl::Status parsed = fs.Parse(argc, argv);
  if (fs.help_requested()) {
    out << kUsage << fs.Usage();
    return 0;
  }
  if (!parsed.ok()) {
    err << parsed.message() << "\n" << kUsage << fs.Usage();
    return 2;
  }
  if (fs.args().size() != 1) {
    err << "want exactly one workload\n" << kUsage << fs.Usage();
    return 2;
  }
  c.workload = fs.args()[0];
  c.endpoints = SplitList(endpoints);
  for (const std::string& p : SplitList(pids)) {
    int pid;
    if (!absl::SimpleAtoi(p, &pid) || pid <= 0) {
      err << "invalid pid: " << p << "\n";
      return 2;
    }
    c.pids.push_back(pid);
  }
  c.data_dirs = SplitList(data_dirs);

  absl::StatusOr<Result> result = RunWorkload(c);
  if (!result.ok()) {
    err << "lockd-bench: " << result.status() << "\n";
    return 2;
  }
  out << (c.format == "json" ? FormatJson(*result) + "\n"
                             : FormatText(*result));
  out.flush();
  return result->error_total() == 0 ? 0 : 1;
}

}  // namespace lockd_bench
