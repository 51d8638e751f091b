#include "lockd/server/corrupt_check.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace lockd {
namespace {

// A leader (id 1) and two peers whose answers the test sets.
struct Fake {
  kv::MvccStore::HashResult local{111, 50, 10};
  // Set to change the leader's hash between the two looks.
  std::optional<kv::MvccStore::HashResult> local_after;
  std::map<uint64_t, absl::StatusOr<etcdserverpb::HashKVResponse>> peers;
  absl::Status barrier;
  bool leader = true;
  std::vector<uint64_t> raised;
  int looks = 0;

  static etcdserverpb::HashKVResponse Answer(uint32_t hash, int64_t revision,
                                             int64_t compact) {
    etcdserverpb::HashKVResponse r;
    r.set_hash(hash);
    r.set_compact_revision(compact);
    r.mutable_header()->set_revision(revision);
    return r;
  }

  CorruptionChecker::Hooks Hooks() {
    CorruptionChecker::Hooks h;
    h.local_hash = [this]() -> absl::StatusOr<kv::MvccStore::HashResult> {
      ++looks;
      return looks > 1 && local_after.has_value() ? *local_after : local;
    };
    h.peers = [this] {
      std::vector<uint64_t> ids;
      for (const auto& [id, r] : peers) ids.push_back(id);
      return ids;
    };
    h.peer_hash = [this](uint64_t id, int64_t revision)
        -> absl::StatusOr<etcdserverpb::HashKVResponse> {
      EXPECT_EQ(revision, local.revision);
      return peers.at(id);
    };
    h.read_barrier = [this] { return barrier; };
    h.raise_alarm = [this](uint64_t id) {
      raised.push_back(id);
      return absl::OkStatus();
    };
    h.is_leader = [this] { return leader; };
    return h;
  }
};

TEST(CorruptionCheckTest, Initial_PassesWhenPeersAgreeOrCannotBeCompared) {
  Fake f;
  f.peers[2] = Fake::Answer(111, 60, 10);
  // Compacted further: cannot be compared.
  f.peers[3] = Fake::Answer(999, 60, 20);
  CorruptionChecker c(1, f.Hooks());
  EXPECT_TRUE(c.InitialCheck().ok());
  // Behind this member, or down: skipped.
  f.peers[2] = absl::OutOfRangeError(
      "etcdserver: mvcc: required revision is a future revision");
  f.peers[3] = absl::UnavailableError("connection refused");
  EXPECT_TRUE(c.InitialCheck().ok());
}

TEST(CorruptionCheckTest, Initial_SameCompactionOtherHashRefusesToStart) {
  Fake f;
  f.peers[2] = Fake::Answer(111, 60, 10);
  f.peers[3] = Fake::Answer(222, 60, 10);
  CorruptionChecker c(1, f.Hooks());
  absl::Status s = c.InitialCheck();
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_NE(s.message().find("found data inconsistency with peers"),
            std::string::npos);
}

TEST(CorruptionCheckTest, Periodic_AgreementRaisesNothing) {
  Fake f;
  f.peers[2] = Fake::Answer(111, 50, 10);
  f.peers[3] = Fake::Answer(111, 48, 10);
  CorruptionChecker c(1, f.Hooks());
  EXPECT_EQ(*c.CheckOnce(), 0u);
  EXPECT_TRUE(f.raised.empty());
}

TEST(CorruptionCheckTest, Periodic_DifferentHashRaisesOnceForThatMember) {
  Fake f;
  f.peers[2] = Fake::Answer(222, 50, 10);
  f.peers[3] = Fake::Answer(333, 50, 10);
  CorruptionChecker c(1, f.Hooks());
  EXPECT_EQ(*c.CheckOnce(), 2u);
  EXPECT_EQ(f.raised, std::vector<uint64_t>{2});
}

TEST(CorruptionCheckTest, Periodic_PeerAheadOfTheLeaderRaises) {
  Fake f;
  f.peers[2] = Fake::Answer(111, 50, 10);
  f.peers[3] = Fake::Answer(111, 51, 10);  // a revision the leader lacks
  CorruptionChecker c(1, f.Hooks());
  EXPECT_EQ(*c.CheckOnce(), 3u);
  Fake g;
  g.peers[2] = Fake::Answer(5, 50, 30);  // compacted past the leader
  CorruptionChecker d(1, g.Hooks());
  EXPECT_EQ(*d.CheckOnce(), 2u);
}

TEST(CorruptionCheckTest, Periodic_LeaderHashChangingUnderItRaisesForItself) {
  Fake f;
  f.peers[2] = Fake::Answer(111, 50, 10);
  f.local_after = kv::MvccStore::HashResult{112, 50, 10};
  CorruptionChecker c(1, f.Hooks());
  EXPECT_EQ(*c.CheckOnce(), 1u);
}

TEST(CorruptionCheckTest, Periodic_OnlyTheLeaderAndOnlyAfterTheBarrier) {
  Fake f;
  f.peers[2] = Fake::Answer(222, 50, 10);
  f.leader = false;
  CorruptionChecker c(1, f.Hooks());
  EXPECT_EQ(*c.CheckOnce(), 0u);
  EXPECT_EQ(f.looks, 0);
  f.leader = true;
  f.barrier = absl::UnavailableError("etcdserver: leader changed");
  EXPECT_FALSE(c.CheckOnce().ok());
  EXPECT_TRUE(f.raised.empty());
}

}  // namespace
}  // namespace lockd
