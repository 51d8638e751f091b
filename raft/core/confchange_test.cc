#include "raft/core/confchange.h"

#include <gtest/gtest.h>

#include "raft/core/raft.h"

namespace lockd::raft {
namespace {

ConfChangeSingle V(uint64_t id) { return {ConfChangeType::kAddNode, id}; }
ConfChangeSingle L(uint64_t id) {
  return {ConfChangeType::kAddLearnerNode, id};
}
ConfChangeSingle R(uint64_t id) { return {ConfChangeType::kRemoveNode, id}; }

void Set(ProgressTracker* t, const absl::StatusOr<ConfigAndProgress>& r) {
  ASSERT_TRUE(r.ok()) << r.status();
  t->config = r->config;
  t->progress = r->progress;
}

TEST(Changer_Simple, AtMostOneVoterChange) {  // thesis §4.1
  ProgressTracker t(10, 0);
  Set(&t, Changer(t, 1).Simple({V(1)}));
  Set(&t, Changer(t, 1).Simple({V(2)}));
  EXPECT_EQ(t.config.voters.incoming, (MajorityConfig{1, 2}));
  EXPECT_FALSE(Changer(t, 1).Simple({V(3), V(4)}).ok());
  Set(&t, Changer(t, 1).Simple({L(5), L(6)}));  // learners are free
  EXPECT_EQ(t.config.learners.size(), 2u);
  EXPECT_FALSE(Changer(t, 1).Simple({R(1), R(2)}).ok());
}

TEST(Changer_EnterJoint, DemotedVoterBecomesLearnerOnLeave) {  // thesis §4.3
  ProgressTracker t(10, 0);
  Set(&t, RestoreConfig(t, 1, ConfState{{1, 2, 3}, {}, {}, {}, false}));
  Set(&t, Changer(t, 1).EnterJoint(true, {L(3), V(4)}));
  EXPECT_EQ(t.config.voters.incoming, (MajorityConfig{1, 2, 4}));
  EXPECT_EQ(t.config.voters.outgoing, (MajorityConfig{1, 2, 3}));
  EXPECT_EQ(t.config.learners_next, (std::set<uint64_t>{3}));
  EXPECT_FALSE(Changer(t, 1).EnterJoint(true, {V(5)}).ok());  // already joint
  Set(&t, Changer(t, 1).LeaveJoint());
  EXPECT_EQ(t.config.learners, (std::set<uint64_t>{3}));
  EXPECT_TRUE(t.progress.at(3).is_learner);
  EXPECT_FALSE(Changer(t, 1).LeaveJoint().ok());
}

TEST(Changer_RemoveAll, IsRejected) {
  ProgressTracker t(10, 0);
  Set(&t, RestoreConfig(t, 1, ConfState{{1}, {}, {}, {}, false}));
  EXPECT_FALSE(Changer(t, 1).Simple({R(1)}).ok());
  EXPECT_FALSE(Changer(t, 1).EnterJoint(false, {R(1)}).ok());
}

TEST(RestoreConfig, RoundTripsJointConfState) {
  ProgressTracker t(10, 0);
  ConfState cs{{1, 2, 4}, {5}, {1, 2, 3}, {3}, true};
  Set(&t, RestoreConfig(t, 7, cs));
  EXPECT_EQ(t.GetConfState(), cs);
}

TEST(Changer_Property, SimpleAndJointReachSameConfig) {
  // For every single change, applying it directly or via enter+leave joint
  // yields the same final configuration (etcd confchange quick test).
  Rng rng(7);
  for (int iter = 0; iter < 500; ++iter) {
    ProgressTracker t(10, 0);
    Set(&t, RestoreConfig(t, 1, ConfState{{1, 2, 3}, {4}, {}, {}, false}));
    const uint64_t id = 1 + rng.Uniform(6);
    const ConfChangeSingle cc{static_cast<ConfChangeType>(rng.Uniform(3)), id};
    absl::StatusOr<ConfigAndProgress> simple = Changer(t, 1).Simple({cc});
    absl::StatusOr<ConfigAndProgress> joint =
        Changer(t, 1).EnterJoint(false, {cc});
    if (!simple.ok() || !joint.ok()) {
      EXPECT_EQ(simple.ok(), joint.ok())
          << DescribeConfChange({ConfChangeTransition::kAuto, {cc}, ""});
      continue;
    }
    ProgressTracker tj(10, 0);
    Set(&tj, joint);
    absl::StatusOr<ConfigAndProgress> left = Changer(tj, 1).LeaveJoint();
    ASSERT_TRUE(left.ok());
    ProgressTracker a(10, 0), b(10, 0);
    Set(&a, simple);
    Set(&b, left);
    EXPECT_EQ(a.GetConfState(), b.GetConfState());
  }
}

}  // namespace
}  // namespace lockd::raft
