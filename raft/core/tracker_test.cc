#include "raft/core/tracker.h"

#include <gtest/gtest.h>

namespace lockd::raft {
namespace {

TEST(Inflights_Full, BoundedByCountAndBytes) {  // thesis §10.2 pipelining
  Inflights in(3, 100);
  in.Add(1, 10);
  in.Add(2, 10);
  EXPECT_FALSE(in.Full());
  in.Add(3, 10);
  EXPECT_TRUE(in.Full());
  in.FreeLE(2);
  EXPECT_EQ(in.Count(), 1u);
  EXPECT_EQ(in.Bytes(), 10u);
  in.Add(4, 95);
  EXPECT_TRUE(in.Full());  // bytes
  in.FreeFirstOne();
  EXPECT_FALSE(in.Full());
}

TEST(Inflights_Ring, WrapsAround) {
  Inflights in(4, 0);
  for (uint64_t i = 1; i <= 100; ++i) {
    in.Add(i, 1);
    if (in.Full()) in.FreeLE(i - 2);
  }
  EXPECT_LE(in.Count(), 4u);
}

TEST(Progress_MaybeDecrTo, ProbeIgnoresStaleRejections) {  // §5.3
  Progress p(10, 0);
  p.match = 3;
  p.next = 10;
  EXPECT_FALSE(p.MaybeDecrTo(5, 4));  // not the outstanding probe
  EXPECT_TRUE(p.MaybeDecrTo(9, 6));
  EXPECT_EQ(p.next, 7u);
  p.BecomeReplicate();
  EXPECT_FALSE(p.MaybeDecrTo(2, 2));  // below match: stale
  EXPECT_TRUE(p.MaybeDecrTo(5, 4));
  EXPECT_EQ(p.next, 4u);
}

TEST(Progress_IsPaused, ByState) {
  Progress p(1, 0);
  p.next = 1;
  p.UpdateOnEntriesSend(1, 1, 1);
  EXPECT_TRUE(p.IsPaused());  // probe sent
  p.BecomeReplicate();
  EXPECT_FALSE(p.IsPaused());
  p.UpdateOnEntriesSend(1, 1, p.next);
  EXPECT_TRUE(p.IsPaused());  // window of one is full
  p.BecomeSnapshot(10);
  EXPECT_TRUE(p.IsPaused());
  p.match = 10;
  p.BecomeProbe();
  EXPECT_EQ(p.next, 11u);
}

TEST(MajorityCommittedIndex, PicksMedianOfMatches) {  // §5.3
  ProgressMap pm;
  for (uint64_t id = 1; id <= 5; ++id) {
    Progress p(1, 0);
    p.match = id * 10;
    pm.emplace(id, p);
  }
  EXPECT_EQ(MajorityCommittedIndex({1, 2, 3, 4, 5}, pm), 30u);
  EXPECT_EQ(MajorityCommittedIndex({1, 2}, pm), 10u);
  EXPECT_EQ(MajorityCommittedIndex({5}, pm), 50u);
}

TEST(ProgressTracker_Committed, JointNeedsBothMajorities) {  // thesis §4.3
  ProgressTracker t(1, 0);
  t.config.voters.incoming = {1, 2, 3};
  t.config.voters.outgoing = {3, 4, 5};
  for (uint64_t id = 1; id <= 5; ++id) {
    Progress p(1, 0);
    p.match = id <= 3 ? 10 : 1;
    t.progress.emplace(id, p);
  }
  EXPECT_EQ(t.Committed(), 1u);
}

TEST(MajorityVoteResult, WonLostPending) {  // §5.2
  MajorityConfig c{1, 2, 3};
  EXPECT_EQ(MajorityVoteResult(c, {{1, true}}), VoteResult::kPending);
  EXPECT_EQ(MajorityVoteResult(c, {{1, true}, {2, true}}), VoteResult::kWon);
  EXPECT_EQ(MajorityVoteResult(c, {{1, false}, {2, false}}), VoteResult::kLost);
  EXPECT_EQ(MajorityVoteResult({}, {}), VoteResult::kWon);
}

}  // namespace
}  // namespace lockd::raft
