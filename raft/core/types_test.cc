#include "raft/core/types.h"

#include <gtest/gtest.h>

namespace lockd::raft {
namespace {

TEST(EncodeConfChange, RoundTrips) {
  ConfChange cc;
  cc.transition = ConfChangeTransition::kJointExplicit;
  cc.changes = {{ConfChangeType::kAddNode, 1},
                {ConfChangeType::kRemoveNode, 1ULL << 40},
                {ConfChangeType::kAddLearnerNode, 300}};
  cc.context = std::string("ctx\0x", 5);
  absl::StatusOr<ConfChange> got = DecodeConfChange(EncodeConfChange(cc));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->transition, cc.transition);
  ASSERT_EQ(got->changes.size(), 3u);
  EXPECT_EQ(got->changes[1].node_id, 1ULL << 40);
  EXPECT_EQ(got->context, cc.context);
}

TEST(EncodeConfChange, StableV1Format) {
  // The format is replicated: an old log must decode the same way forever.
  ConfChange cc;
  cc.changes = {{ConfChangeType::kAddLearnerNode, 5}};
  EXPECT_EQ(EncodeConfChange(cc), std::string("\x01\x00\x01\x01\x05\x00", 6));
}

TEST(DecodeConfChange, RejectsCorruptInput) {
  EXPECT_FALSE(DecodeConfChange("").ok());
  EXPECT_FALSE(DecodeConfChange("\x02").ok());  // unknown version
  EXPECT_FALSE(DecodeConfChange(std::string("\x01\x00\x05", 3)).ok());
  EXPECT_FALSE(DecodeConfChange(std::string("\x01\x07\x00\x00", 4)).ok());
  std::string good = EncodeConfChange(ConfChange{});
  EXPECT_TRUE(DecodeConfChange(good).ok());
  EXPECT_FALSE(DecodeConfChange(good + "x").ok());
}

TEST(ConfChange_EntersJoint, ByTransitionAndCount) {  // thesis §4.3
  bool auto_leave = false;
  ConfChange one{
      ConfChangeTransition::kAuto, {{ConfChangeType::kAddNode, 1}}, ""};
  EXPECT_FALSE(one.EntersJoint(&auto_leave));
  ConfChange two = one;
  two.changes.push_back({ConfChangeType::kRemoveNode, 2});
  EXPECT_TRUE(two.EntersJoint(&auto_leave));
  EXPECT_TRUE(auto_leave);
  one.transition = ConfChangeTransition::kJointExplicit;
  EXPECT_TRUE(one.EntersJoint(&auto_leave));
  EXPECT_FALSE(auto_leave);
  EXPECT_TRUE(ConfChange{}.LeavesJoint());
}

}  // namespace
}  // namespace lockd::raft
