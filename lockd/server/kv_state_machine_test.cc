#include "lockd/server/kv_state_machine.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace lockd {
namespace {

raft::Entry PutEntry(uint64_t index, uint64_t origin, uint64_t id,
                     const std::string& key) {
  internal::Request req;
  req.set_version(1);
  req.set_origin_member(origin);
  req.set_id(id);
  req.mutable_put()->set_key(key);
  req.mutable_put()->set_value("v" + std::to_string(index));
  raft::Entry e;
  e.index = index;
  e.term = 1;
  e.data = req.SerializeAsString();
  return e;
}

TEST(KvStateMachineTest, Apply_SkipsEntriesAlreadyAppliedAndAnswersOwnOnly) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/sm";
  auto store = kv::MvccStore::Open(dir);
  ASSERT_TRUE(store.ok());
  KvStateMachine sm(/*member_id=*/7, store->get());

  int answered = 0;
  sm.Register(100, [&](ApplyResult r) {
    EXPECT_TRUE(r.status.ok());
    EXPECT_EQ(r.put.header().revision(), 2);
    ++answered;
  });
  // Another member's command with a colliding id must not answer ours.
  sm.Register(101, [&](ApplyResult) { ++answered; });
  ASSERT_TRUE(
      sm.Apply({PutEntry(1, 7, 100, "a"), PutEntry(2, 8, 101, "b")}).ok());
  EXPECT_EQ(answered, 1);
  EXPECT_EQ(sm.AppliedIndex(), 2u);
  EXPECT_EQ((*store)->revision(), 3);

  // Replaying entries the store already holds changes nothing; only the
  // new one applies.
  ASSERT_TRUE(sm.Apply({PutEntry(1, 7, 1, "a"), PutEntry(2, 8, 2, "b"),
                        PutEntry(3, 8, 3, "c")})
                  .ok());
  EXPECT_EQ((*store)->revision(), 4);
  EXPECT_EQ(sm.AppliedIndex(), 3u);
  ASSERT_TRUE(sm.Apply({PutEntry(2, 8, 2, "b")}).ok());
  EXPECT_EQ((*store)->revision(), 4);

  // An entry that is not a command this version knows is skipped alike on
  // every member, and the applied index still covers it.
  raft::Entry junk;
  junk.index = 4;
  junk.term = 1;
  junk.data = "not a protobuf";
  ASSERT_TRUE(sm.Apply({junk}).ok());
  EXPECT_EQ(sm.AppliedIndex(), 4u);
  EXPECT_EQ((*store)->revision(), 4);
}

}  // namespace
}  // namespace lockd
