// Runs the Raft simulator over a range of seeds.
//
//   bazel run //tests/sim:raft_sim -- --seeds=1000 --start=1
//   bazel run //tests/sim:raft_sim -- --start=<failing seed> --seeds=1
//   --verbose
//
// Overnight (a million seeds, optimized, on every core):
//   bazel build --config=opt //tests/sim:raft_sim
//   N=$(nproc); for i in $(seq 0 $((N-1))); do
//     bazel-bin/tests/sim/raft_sim --seeds=$((1000000/N))
//       --start=$((1 + i*1000000/N)) > sim.$i.log &
//   done; wait; tail -n1 sim.*.log
#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "tests/sim/sim.h"

ABSL_FLAG(uint64_t, seeds, 100, "number of seeds to run");
ABSL_FLAG(uint64_t, start, 1, "first seed");
ABSL_FLAG(int, chaos_steps, 1500, "steps with faults per seed");
ABSL_FLAG(int, liveness_steps, 2000, "bound on steps to recover after heal");
ABSL_FLAG(bool, membership, true, "random membership changes");
ABSL_FLAG(bool, verbose, false, "print every event");
ABSL_FLAG(bool, stop_on_failure, false, "stop at the first failing seed");
ABSL_FLAG(uint64_t, progress_every, 0,
          "print a progress line every N seeds (0: never)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const uint64_t seeds = absl::GetFlag(FLAGS_seeds);
  const uint64_t start = absl::GetFlag(FLAGS_start);
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t passed = 0, failed = 0;
  for (uint64_t seed = start; seed < start + seeds; ++seed) {
    lockd::raft::sim::SimOptions o;
    o.seed = seed;
    o.chaos_steps = absl::GetFlag(FLAGS_chaos_steps);
    o.liveness_steps = absl::GetFlag(FLAGS_liveness_steps);
    o.membership = absl::GetFlag(FLAGS_membership);
    o.verbose = absl::GetFlag(FLAGS_verbose);
    const lockd::raft::sim::SimResult r = lockd::raft::sim::RunSimulation(o);
    if (r.ok) {
      ++passed;
    } else {
      ++failed;
      std::printf(
          "FAIL seed=%llu: %s\n  replay: bazel run //tests/sim:raft_sim -- "
          "--start=%llu --seeds=1 --verbose\n",
          static_cast<unsigned long long>(seed), r.error.c_str(),
          static_cast<unsigned long long>(seed));
      std::fflush(stdout);
      if (absl::GetFlag(FLAGS_stop_on_failure)) break;
    }
    const uint64_t every = absl::GetFlag(FLAGS_progress_every);
    if (every != 0 && (passed + failed) % every == 0) {
      std::printf("progress: through seed %llu: %llu passed, %llu failed\n",
                  static_cast<unsigned long long>(seed),
                  static_cast<unsigned long long>(passed),
                  static_cast<unsigned long long>(failed));
      std::fflush(stdout);
    }
    if (o.verbose) {
      std::printf(
          "seed %llu: steps=%lld applied=%llu elections=%d conf_changes=%d "
          "snapshots=%d crashes=%d reads=%d transfers=%d\n",
          static_cast<unsigned long long>(seed),
          static_cast<long long>(r.steps),
          static_cast<unsigned long long>(r.max_applied), r.elections,
          r.conf_changes, r.snapshots_sent, r.crashes, r.reads_served,
          r.transfers);
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("time: %.1fs\n", secs);
  std::printf("%llu passed, %llu failed\n",
              static_cast<unsigned long long>(passed),
              static_cast<unsigned long long>(failed));
  return failed == 0 ? 0 : 1;
}
