// Bounded run of the malformed-message fuzzer (see fuzz.h); the long-running
// mode is `bazel run //raft/core:raft_fuzz -- --iterations=N`.
#include "raft/core/fuzz.h"

#include <gtest/gtest.h>

namespace lockd::raft::fuzz {
namespace {

TEST(Step_Fuzz, MalformedMessagesNeverBreakInvariants) {
  uint64_t messages = 0, rejected = 0;
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    FuzzStats s = RunFuzzIteration(seed, 300);
    messages += s.messages;
    rejected += s.rejected;
  }
  EXPECT_GT(messages, 10000u);
  EXPECT_GT(messages, rejected);  // most inputs reach the state machine
}

}  // namespace
}  // namespace lockd::raft::fuzz
