// Runs a bounded slice of simulator seeds in CI. A failure names the seed;
// replay it with `bazel run //tests/sim:raft_sim -- --start=S --seeds=1
// --verbose`.
#include "tests/sim/sim.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace lockd::raft::sim {
namespace {

uint64_t EnvOr(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v == nullptr ? def : std::strtoull(v, nullptr, 10);
}

// 30 chunks of 10 seeds, spread over the test's shards.
constexpr uint64_t kChunkSeeds = 10;
class RaftSimChunk : public ::testing::TestWithParam<int> {};

TEST_P(RaftSimChunk, SeedsPass) {
  const uint64_t start = EnvOr("RAFT_SIM_START", 1);
  const uint64_t seeds = EnvOr("RAFT_SIM_SEEDS", 300);
  const uint64_t first = start + GetParam() * kChunkSeeds;
  for (uint64_t seed = first;
       seed < first + kChunkSeeds && seed < start + seeds; ++seed) {
    SimOptions o;
    o.seed = seed;
    SimResult r = RunSimulation(o);
    EXPECT_TRUE(r.ok) << "seed " << seed << ": " << r.error
                      << "\n  replay: bazel run //tests/sim:raft_sim -- "
                         "--start="
                      << seed << " --seeds=1 --verbose";
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, RaftSimChunk, ::testing::Range(0, 30));

TEST(RaftSim, SameSeedSameRun) {
  SimOptions o;
  o.seed = 42;
  const SimResult a = RunSimulation(o);
  const SimResult b = RunSimulation(o);
  EXPECT_EQ(a.ok, b.ok);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.max_applied, b.max_applied);
  EXPECT_EQ(a.elections, b.elections);
  EXPECT_EQ(a.conf_changes, b.conf_changes);
  EXPECT_EQ(a.reads_served, b.reads_served);
}

}  // namespace
}  // namespace lockd::raft::sim
