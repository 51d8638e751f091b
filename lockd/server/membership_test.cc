#include "lockd/server/membership.h"

#include <gtest/gtest.h>

namespace lockd {
namespace {

internal::MemberChange Context(uint64_t id, const std::string& name) {
  internal::MemberChange c;
  c.set_version(1);
  c.mutable_member()->set_id(id);
  c.mutable_member()->set_name(name);
  c.mutable_member()->add_peerurls("http://127.0.0.1:" + std::to_string(id));
  return c;
}

raft::ConfChange Change(raft::ConfChangeType type, uint64_t id) {
  raft::ConfChange cc;
  cc.changes.push_back({type, id});
  return cc;
}

TEST(MembershipTest, ApplyConfChangeToTable_AddPromoteRemove) {
  MemberList table;
  ApplyConfChangeToTable(Change(raft::ConfChangeType::kAddNode, 3),
                         Context(3, "c"), &table);
  ApplyConfChangeToTable(Change(raft::ConfChangeType::kAddLearnerNode, 1),
                         Context(1, "a"), &table);
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table[0].id(), 1u);  // sorted by id
  EXPECT_TRUE(table[0].islearner());
  EXPECT_EQ(table[0].name(), "a");
  EXPECT_EQ(table[0].peerurls(0), "http://127.0.0.1:1");
  EXPECT_FALSE(table[1].islearner());

  // Promotion keeps the member's attributes.
  internal::MemberChange bare;
  bare.mutable_member()->set_id(1);
  ApplyConfChangeToTable(Change(raft::ConfChangeType::kAddNode, 1), bare,
                         &table);
  EXPECT_FALSE(table[0].islearner());
  EXPECT_EQ(table[0].name(), "a");

  // A voter is never demoted by a learner add, nor duplicated.
  ApplyConfChangeToTable(Change(raft::ConfChangeType::kAddLearnerNode, 3),
                         Context(3, "other"), &table);
  ASSERT_EQ(table.size(), 2u);
  EXPECT_FALSE(table[1].islearner());
  EXPECT_EQ(table[1].name(), "c");

  ApplyConfChangeToTable(Change(raft::ConfChangeType::kRemoveNode, 3), bare,
                         &table);
  ApplyConfChangeToTable(Change(raft::ConfChangeType::kRemoveNode, 99), bare,
                         &table);
  ASSERT_EQ(table.size(), 1u);
  EXPECT_EQ(table[0].id(), 1u);

  // Leaving a joint configuration changes nothing.
  ApplyConfChangeToTable(raft::ConfChange{}, internal::MemberChange{}, &table);
  EXPECT_EQ(table.size(), 1u);
}

TEST(MembershipTest, EncodeDecode_RoundTripAndCorruption) {
  MemberList table;
  ApplyConfChangeToTable(Change(raft::ConfChangeType::kAddNode, 7),
                         Context(7, "x"), &table);
  absl::StatusOr<MemberList> back = DecodeMemberTable(EncodeMemberTable(table));
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].name(), "x");
  EXPECT_FALSE(DecodeMemberTable("\xff\xff garbage").ok());
}

}  // namespace
}  // namespace lockd
