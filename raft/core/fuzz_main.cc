// Long-running mode of the malformed-message fuzzer:
//   bazel run //raft/core:raft_fuzz -- --iterations=100000 --start=1
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "raft/core/fuzz.h"

ABSL_FLAG(uint64_t, iterations, 1000, "number of seeds");
ABSL_FLAG(uint64_t, start, 1, "first seed");
ABSL_FLAG(int, steps, 500, "inputs per seed");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const uint64_t start = absl::GetFlag(FLAGS_start);
  const uint64_t n = absl::GetFlag(FLAGS_iterations);
  uint64_t messages = 0, rejected = 0, violations = 0;
  for (uint64_t seed = start; seed < start + n; ++seed) {
    // A crash leaves this line as the last output: the seed to replay.
    std::fprintf(stderr, "\rseed %llu", static_cast<unsigned long long>(seed));
    lockd::raft::fuzz::FuzzStats s =
        lockd::raft::fuzz::RunFuzzIteration(seed, absl::GetFlag(FLAGS_steps));
    messages += s.messages;
    rejected += s.rejected;
    violations += s.protocol_violations;
  }
  std::printf(
      "\n%llu seeds, %llu messages (%llu rejected at the boundary, "
      "%llu dropped as protocol violations); no invariant broken\n",
      static_cast<unsigned long long>(n),
      static_cast<unsigned long long>(messages),
      static_cast<unsigned long long>(rejected),
      static_cast<unsigned long long>(violations));
  return 0;
}
