#include "lockd/server/kv_state_machine.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "lockd/util/clock.h"

namespace lockd {
namespace {

raft::Entry PutEntry(uint64_t index, uint64_t origin, uint64_t id,
                     const std::string& key, uint64_t term = 1) {
  internal::Request req;
  req.set_version(1);
  req.set_origin_member(origin);
  req.set_id(id);
  req.mutable_put()->set_key(key);
  req.mutable_put()->set_value("v" + std::to_string(index));
  raft::Entry e;
  e.index = index;
  e.term = term;
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

// A command proposed to be appended only in term 2 (RaftNode::ProposeAsync
// with a term) that is not applied by the time an entry of term 3 is, never
// will be: its waiter hears "leader changed" then. Waiters of the current
// term, and those without a term, keep waiting; a waiter whose entry is in
// the same batch as the later term's gets its result.
TEST(KvStateMachineTest, Apply_LaterTermFailsWaitersOfEndedTermOnly) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/sm-term";
  auto store = kv::MvccStore::Open(dir);
  ASSERT_TRUE(store.ok());
  KvStateMachine sm(/*member_id=*/7, store->get());
  std::map<uint64_t, absl::Status> answers;
  auto waiter = [&](uint64_t id) {
    return [&answers, id](ApplyResult r) { answers[id] = r.status; };
  };
  sm.Register(1, waiter(1), absl::InfiniteFuture(), /*term=*/2);  // lost
  sm.Register(2, waiter(2), absl::InfiniteFuture(), /*term=*/2);  // applies
  sm.Register(3, waiter(3), absl::InfiniteFuture(), /*term=*/3);
  sm.Register(4, waiter(4));  // no term: only its result or its deadline
  ASSERT_TRUE(sm.Apply({PutEntry(1, 8, 50, "a", 2)}).ok());
  EXPECT_TRUE(answers.empty());
  // Term 3 begins; command 2 (term 2) is in the same batch, before it.
  ASSERT_TRUE(
      sm.Apply({PutEntry(2, 7, 2, "b", 2), PutEntry(3, 8, 51, "c", 3)}).ok());
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[2].ok()) << answers[2];
  EXPECT_EQ(answers[1].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(answers[1].message(), "etcdserver: leader changed");
  // More of term 3 leaves the others waiting; command 3 then applies.
  ASSERT_TRUE(sm.Apply({PutEntry(4, 8, 52, "d", 3)}).ok());
  EXPECT_EQ(answers.size(), 2u);
  ASSERT_TRUE(sm.Apply({PutEntry(5, 7, 3, "e", 3)}).ok());
  EXPECT_TRUE(answers[3].ok());
  EXPECT_FALSE(sm.Cancel(3));
  EXPECT_TRUE(sm.Cancel(4));  // still waiting
}

// A follower holds the leader's answer to its write until it has applied
// the write itself (read-your-writes on that member), or until a deadline.
TEST(KvStateMachineTest, WhenApplied_RunsOnceTheStoreHasTheRevision) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/sm-rev";
  auto store = kv::MvccStore::Open(dir);
  ASSERT_TRUE(store.ok());
  KvStateMachine sm(/*member_id=*/7, store->get());
  const int64_t now = (*store)->revision();
  int ran_now = 0, ran_next = 0, ran_late = 0;
  sm.WhenApplied(now, absl::InfiniteFuture(), [&] { ++ran_now; });
  EXPECT_EQ(ran_now, 1);
  sm.WhenApplied(now + 1, absl::InfiniteFuture(), [&] { ++ran_next; });
  sm.WhenApplied(now + 2, MonotonicNow() + absl::Seconds(1),
                 [&] { ++ran_late; });
  sm.ExpireWaiters(MonotonicNow());
  EXPECT_EQ(ran_next + ran_late, 0);
  ASSERT_TRUE(sm.Apply({PutEntry(1, 8, 1, "a")}).ok());
  EXPECT_EQ((*store)->revision(), now + 1);
  EXPECT_EQ(ran_next, 1);
  EXPECT_EQ(ran_late, 0);
  // Never applied here (say, this member was removed): the deadline runs it.
  sm.ExpireWaiters(MonotonicNow() + absl::Seconds(2));
  EXPECT_EQ(ran_late, 1);
  EXPECT_EQ(ran_next, 1);
  // A removed member releases what it holds at once.
  int released = 0;
  sm.WhenApplied(now + 5, absl::InfiniteFuture(), [&] { ++released; });
  EXPECT_EQ(released, 0);
  sm.ReleaseRevisionWaits();
  EXPECT_EQ(released, 1);
}

// A follower keeps the waiter of a lease command the leader has answered:
// its own apply answers (the client then reads it here), or, if that does
// not come by the new deadline, the leader's result does. The waiter's term
// no longer matters: the leader applied the command.
TEST(KvStateMachineTest, Rearm_OwnApplyAnswersElseTheGivenResult) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/sm-rearm";
  auto store = kv::MvccStore::Open(dir);
  ASSERT_TRUE(store.ok());
  KvStateMachine sm(/*member_id=*/7, store->get());
  std::map<uint64_t, ApplyResult> answers;
  auto waiter = [&](uint64_t id) {
    return [&answers, id](ApplyResult r) { answers[id] = std::move(r); };
  };
  ApplyResult from_leader;
  from_leader.put.mutable_header()->set_revision(42);
  EXPECT_FALSE(sm.Rearm(1, absl::InfiniteFuture(), from_leader));
  sm.Register(1, waiter(1), absl::InfiniteFuture(), /*term=*/1);
  sm.Register(2, waiter(2), absl::InfiniteFuture(), /*term=*/1);
  ASSERT_TRUE(sm.Rearm(1, MonotonicNow() + absl::Seconds(60), from_leader));
  ASSERT_TRUE(sm.Rearm(2, MonotonicNow() + absl::Seconds(1), from_leader));
  // A later term's entry: neither waiter fails for its term any more.
  ASSERT_TRUE(sm.Apply({PutEntry(1, 8, 50, "a", 2)}).ok());
  EXPECT_TRUE(answers.empty());
  // Command 1 applies here: its own result answers.
  ASSERT_TRUE(sm.Apply({PutEntry(2, 7, 1, "b", 2)}).ok());
  ASSERT_EQ(answers.count(1), 1u);
  EXPECT_TRUE(answers[1].status.ok());
  EXPECT_EQ(answers[1].put.header().revision(), 3);
  // Command 2 never applies here: at its deadline the leader's result.
  sm.ExpireWaiters(MonotonicNow() + absl::Seconds(2));
  ASSERT_EQ(answers.count(2), 1u);
  EXPECT_TRUE(answers[2].status.ok()) << answers[2].status;
  EXPECT_EQ(answers[2].put.header().revision(), 42);
  EXPECT_FALSE(sm.Rearm(2, absl::InfiniteFuture(), from_leader));
}

// etcd's alarm appliers: NOSPACE refuses lease grants (as it refuses
// puts); CORRUPT refuses every write, lease grants and revokes included,
// while the store still answers reads.
TEST(KvStateMachineTest, Apply_AlarmsRefuseWritesAsEtcdsAppliers) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/sm-alarms";
  auto store = kv::MvccStore::Open(dir);
  ASSERT_TRUE(store.ok());
  KvStateMachine sm(/*member_id=*/7, store->get());
  uint64_t index = 0;
  auto apply = [&](const std::function<void(internal::Request*)>& fill) {
    internal::Request req;
    req.set_version(1);
    req.set_origin_member(7);
    req.set_id(++index);
    fill(&req);
    raft::Entry e;
    e.index = index;
    e.term = 1;
    e.data = req.SerializeAsString();
    absl::Status got;
    sm.Register(index, [&got](ApplyResult r) { got = r.status; });
    EXPECT_TRUE(sm.Apply({e}).ok());
    return got;
  };
  auto alarm = [](etcdserverpb::AlarmType type) {
    return [type](internal::Request* r) {
      r->mutable_alarm()->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
      r->mutable_alarm()->set_memberid(3);
      r->mutable_alarm()->set_alarm(type);
    };
  };
  auto put = [](internal::Request* r) { r->mutable_put()->set_key("k"); };
  auto grant = [](internal::Request* r) {
    r->mutable_lease_grant()->set_id(5);
    r->mutable_lease_grant()->set_ttl(60);
  };
  auto revoke = [](internal::Request* r) {
    r->mutable_lease_revoke()->set_id(5);
  };
  ASSERT_TRUE(apply(put).ok());
  ASSERT_TRUE(apply(alarm(etcdserverpb::NOSPACE)).ok());
  EXPECT_EQ(apply(grant).message(),
            "etcdserver: mvcc: database space exceeded");
  ASSERT_TRUE(apply(alarm(etcdserverpb::CORRUPT)).ok());
  for (const auto& write : {std::function<void(internal::Request*)>(put),
                            std::function<void(internal::Request*)>(grant),
                            std::function<void(internal::Request*)>(revoke)}) {
    absl::Status s = apply(write);
    EXPECT_TRUE(absl::IsDataLoss(s)) << s;
    EXPECT_EQ(s.message(), "etcdserver: corrupt cluster");
  }
  etcdserverpb::RangeRequest range;
  range.set_key("k");
  etcdserverpb::RangeResponse resp;
  ASSERT_TRUE((*store)->Range(range, &resp).ok());
  EXPECT_EQ(resp.kvs_size(), 1);
}

}  // namespace
}  // namespace lockd
