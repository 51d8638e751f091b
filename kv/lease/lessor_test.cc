#include "kv/lease/lessor.h"

#include <cstdlib>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "kv/mvcc/errors.h"
#include "lockd/util/clock.h"

namespace lockd::kv {
namespace {

// A lessor on a real store with a clock the test moves.
class LessorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/lessor" +
           std::to_string(n++);
    auto s = MvccStore::Open(dir_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    lessor_ = NewLessor();
  }

  std::unique_ptr<Lessor> NewLessor() {
    LessorOptions o;
    o.min_ttl_s = 2;
    o.grace = absl::Seconds(1);
    o.checkpoint_refresh = absl::Seconds(1);
    o.now = [this] { return now_; };
    auto l = std::make_unique<Lessor>(store_.get(), o);
    EXPECT_TRUE(l->ReloadFromStore().ok());
    return l;
  }

  // Each helper applies one command in its own batch at the next index.
  absl::Status Grant(int64_t id, int64_t ttl) {
    etcdserverpb::LeaseGrantRequest req;
    req.set_id(id);
    req.set_ttl(ttl);
    etcdserverpb::LeaseGrantResponse resp;
    auto b = store_->BeginApply(lessor_.get());
    absl::Status s = lessor_->ApplyGrant(b.get(), req, &resp);
    EXPECT_TRUE(b->Commit(++index_).ok());
    return s;
  }
  absl::Status Revoke(int64_t id) {
    etcdserverpb::LeaseRevokeRequest req;
    req.set_id(id);
    etcdserverpb::LeaseRevokeResponse resp;
    auto b = store_->BeginApply(lessor_.get());
    absl::Status s = lessor_->ApplyRevoke(b.get(), req, &resp);
    EXPECT_TRUE(b->Commit(++index_).ok());
    return s;
  }
  absl::Status Put(const std::string& key, int64_t lease) {
    etcdserverpb::PutRequest req;
    req.set_key(key);
    req.set_value("v");
    req.set_lease(lease);
    etcdserverpb::PutResponse resp;
    auto b = store_->BeginApply(lessor_.get());
    absl::Status s = b->Put(req, &resp);
    EXPECT_TRUE(b->Commit(++index_).ok());
    return s;
  }
  void Checkpoint(Lessor* on, const internal::LeaseCheckpoint& cp) {
    auto b = store_->BeginApply(on);
    on->ApplyCheckpoint(b.get(), cp);
    EXPECT_TRUE(b->Commit(++index_).ok());
  }
  int64_t Remaining(int64_t id) {
    auto info = lessor_->TimeToLive(id);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->remaining_s : -1;
  }

  std::string dir_;
  std::unique_ptr<MvccStore> store_;
  std::unique_ptr<Lessor> lessor_;
  absl::Time now_ = absl::FromUnixSeconds(1000000);
  uint64_t index_ = 0;
};

TEST_F(LessorTest, Grant_ErrorsAreEtcds) {
  EXPECT_EQ(Grant(0, 10), ErrLeaseNotFound());
  EXPECT_EQ(Grant(1, Lessor::kMaxTtlS + 1), ErrLeaseTTLTooLarge());
  EXPECT_TRUE(Grant(1, 10).ok());
  EXPECT_EQ(Grant(1, 10), ErrLeaseExists());
  EXPECT_EQ(lessor_->GrantTtl(1).value(), 2);  // the minimum
  EXPECT_EQ(lessor_->GrantTtl(30).value(), 30);
  EXPECT_EQ(lessor_->GrantTtl(Lessor::kMaxTtlS + 1).status(),
            ErrLeaseTTLTooLarge());
}

TEST_F(LessorTest, PutNeedsAGrantedLease) {
  EXPECT_EQ(Put("a", 7), ErrLeaseNotFound());
  ASSERT_TRUE(Grant(7, 10).ok());
  EXPECT_TRUE(Put("a", 7).ok());
}

TEST_F(LessorTest, Revoke_DeletesEveryKeyInOneRevision) {
  ASSERT_TRUE(Grant(7, 10).ok());
  ASSERT_TRUE(Put("a", 7).ok());
  ASSERT_TRUE(Put("b", 7).ok());
  ASSERT_TRUE(Put("c", 0).ok());
  const int64_t before = store_->revision();
  ASSERT_TRUE(Revoke(7).ok());
  EXPECT_EQ(store_->revision(), before + 1);
  etcdserverpb::RangeRequest req;
  req.set_key(std::string(1, '\0'));
  req.set_range_end(std::string(1, '\0'));
  etcdserverpb::RangeResponse resp;
  ASSERT_TRUE(store_->Range(req, &resp).ok());
  ASSERT_EQ(resp.kvs_size(), 1);
  EXPECT_EQ(resp.kvs(0).key(), "c");
  EXPECT_FALSE(lessor_->LeaseExists(7));
  EXPECT_EQ(Revoke(7), ErrLeaseNotFound());
}

TEST_F(LessorTest, StateSurvivesReloadFromStore) {
  ASSERT_TRUE(Grant(7, 10).ok());
  ASSERT_TRUE(Grant(8, 20).ok());
  ASSERT_TRUE(Revoke(8).ok());
  internal::LeaseCheckpoint cp;
  auto* item = cp.add_items();
  item->set_id(7);
  item->set_remaining_ms(4500);
  Checkpoint(lessor_.get(), cp);
  auto fresh = NewLessor();
  EXPECT_TRUE(fresh->LeaseExists(7));
  EXPECT_FALSE(fresh->LeaseExists(8));
  auto info = fresh->TimeToLive(7);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->granted_ttl_s, 10);
  EXPECT_EQ(info->remaining_s, 4);
}

TEST_F(LessorTest, Expiry_OnlyOnPrimary_AfterGrace_RateLimited) {
  for (int64_t id = 1; id <= 5; ++id) ASSERT_TRUE(Grant(id, 2).ok());
  now_ += absl::Seconds(10);
  EXPECT_TRUE(lessor_->TakeExpired(100).empty());  // not primary
  lessor_->Promote(3);
  // expiry = promotion + 2 s + 1 s grace.
  now_ += absl::Milliseconds(2900);
  EXPECT_TRUE(lessor_->TakeExpired(100).empty());
  now_ += absl::Milliseconds(200);
  EXPECT_EQ(lessor_->TakeExpired(2).size(), 2u);
  EXPECT_EQ(lessor_->TakeExpired(100).size(), 3u);
  // Offered once per retry interval.
  EXPECT_TRUE(lessor_->TakeExpired(100).empty());
  now_ += absl::Seconds(4);
  EXPECT_EQ(lessor_->TakeExpired(100).size(), 5u);
}

TEST_F(LessorTest, KeepAlive_AnsweredOnlyAfterItsCheckpointApplies) {
  ASSERT_TRUE(Grant(7, 10).ok());
  lessor_->Promote(2);
  now_ += absl::Seconds(5);
  auto r = lessor_->Renew(7);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ttl_s, 10);
  EXPECT_TRUE(
      absl::IsDeadlineExceeded(lessor_->WaitCheckpoint(7, *r, MonotonicNow())));
  uint64_t seq = 0;
  internal::LeaseCheckpoint cp;
  ASSERT_TRUE(lessor_->TakeCheckpoint(false, &seq, &cp));
  ASSERT_EQ(cp.items_size(), 1);
  // An active lease's record covers keep-alives for the ack horizon (1 s).
  EXPECT_EQ(cp.items(0).remaining_ms(), 11000);
  EXPECT_EQ(cp.term(), 2u);
  // One in flight at a time.
  internal::LeaseCheckpoint again;
  uint64_t seq2 = 0;
  EXPECT_FALSE(lessor_->TakeCheckpoint(true, &seq2, &again));
  Checkpoint(lessor_.get(), cp);
  lessor_->CheckpointDone(seq, true);
  EXPECT_TRUE(lessor_->WaitCheckpoint(7, *r, MonotonicNow()).ok());
  // The primary's own checkpoint does not move its expiry.
  now_ += absl::Milliseconds(500);
  EXPECT_EQ(Remaining(7), 9);
  // Within the horizon the record covers a keep-alive: answered at once.
  auto covered = lessor_->Renew(7);
  ASSERT_TRUE(covered.ok());
  EXPECT_EQ(covered->generation, 0u);
  EXPECT_TRUE(lessor_->WaitCheckpoint(7, *covered, MonotonicNow()).ok());
  EXPECT_EQ(Remaining(7), 10);
  // Beyond it, the next keep-alive waits for a new record again.
  now_ += absl::Milliseconds(600);
  auto uncovered = lessor_->Renew(7);
  ASSERT_TRUE(uncovered.ok());
  EXPECT_GT(uncovered->generation, 0u);
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      lessor_->WaitCheckpoint(7, *uncovered, MonotonicNow())));
}

// Every acknowledged keep-alive is covered by whichever record ends up the
// latest in the log: a record in flight that covers less (an idle lease's
// exact one) stops immediate answers at once.
TEST_F(LessorTest, KeepAlive_CoverNeverExceedsARecordInFlight) {
  ASSERT_TRUE(Grant(7, 10).ok());
  lessor_->Promote(2);
  auto r = lessor_->Renew(7);
  ASSERT_TRUE(r.ok());
  uint64_t seq = 0;
  internal::LeaseCheckpoint cp;
  ASSERT_TRUE(lessor_->TakeCheckpoint(false, &seq, &cp));
  lessor_->CheckpointDone(seq, true);  // covers keep-alives for 1 s
  // 2 s later the lease is idle; the refresh records it exactly.
  now_ += absl::Seconds(2);
  internal::LeaseCheckpoint idle;
  ASSERT_TRUE(lessor_->TakeCheckpoint(true, &seq, &idle));
  ASSERT_EQ(idle.items_size(), 1);
  EXPECT_EQ(idle.items(0).remaining_ms(), 9000);  // 10 + 1 grace - 2
  auto later = lessor_->Renew(7);
  ASSERT_TRUE(later.ok());
  EXPECT_GT(later->generation, 0u);  // must wait for a record covering it
  lessor_->CheckpointDone(seq, true);
  internal::LeaseCheckpoint next;
  ASSERT_TRUE(lessor_->TakeCheckpoint(false, &seq, &next));
  ASSERT_EQ(next.items_size(), 1);
  EXPECT_EQ(next.items(0).remaining_ms(), 11000);
  lessor_->CheckpointDone(seq, true);
  EXPECT_TRUE(lessor_->WaitCheckpoint(7, *later, MonotonicNow()).ok());
}

TEST_F(LessorTest, KeepAlive_FailedCheckpointIsRetried_DemoteFailsWaiters) {
  ASSERT_TRUE(Grant(7, 10).ok());
  lessor_->Promote(2);
  auto r = lessor_->Renew(7);
  ASSERT_TRUE(r.ok());
  uint64_t seq = 0;
  internal::LeaseCheckpoint cp;
  ASSERT_TRUE(lessor_->TakeCheckpoint(false, &seq, &cp));
  lessor_->CheckpointDone(seq, false);
  internal::LeaseCheckpoint retry;
  ASSERT_TRUE(lessor_->TakeCheckpoint(false, &seq, &retry));
  EXPECT_EQ(retry.items_size(), 1);
  lessor_->Demote();
  EXPECT_EQ(lessor_->WaitCheckpoint(7, *r, MonotonicNow() + absl::Seconds(5)),
            absl::UnavailableError("etcdserver: leader changed"));
  EXPECT_TRUE(absl::IsUnavailable(lessor_->Renew(7).status()));
}

TEST_F(LessorTest, Renew_UnknownOrExpiredLeaseIsNotFound) {
  ASSERT_TRUE(Grant(7, 2).ok());
  lessor_->Promote(2);
  EXPECT_EQ(lessor_->Renew(8).status(), ErrLeaseNotFound());
  now_ += absl::Seconds(4);
  EXPECT_EQ(lessor_->Renew(7).status(), ErrLeaseNotFound());
}

// The rule across leader changes: a new leader's expiry is the checkpointed
// remaining time plus the grace, never the full TTL and never earlier.
TEST_F(LessorTest, LeaderChange_KeepsCheckpointedRemaining) {
  ASSERT_TRUE(Grant(7, 60).ok());
  lessor_->Promote(2);
  now_ += absl::Seconds(20);
  // The old leader refreshes its record of idle leases.
  uint64_t seq = 0;
  internal::LeaseCheckpoint cp;
  ASSERT_TRUE(lessor_->TakeCheckpoint(true, &seq, &cp));
  ASSERT_EQ(cp.items_size(), 1);
  EXPECT_EQ(cp.items(0).remaining_ms(), 41000);  // 60 + 1 grace - 20
  Checkpoint(lessor_.get(), cp);
  lessor_->CheckpointDone(seq, true);
  // Another member (same store contents) becomes leader later.
  now_ += absl::Seconds(2);
  auto next = NewLessor();
  next->Promote(3);
  auto info = next->TimeToLive(7);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->remaining_s, 42);  // 41 + 1 grace: not reset to 60
  // Not expired before then.
  now_ += absl::Seconds(41);
  EXPECT_TRUE(next->TakeExpired(10).empty());
  now_ += absl::Seconds(1);
  EXPECT_EQ(next->TakeExpired(10).size(), 1u);
}

TEST_F(LessorTest, LeaderChange_LateCheckpointFromOldLeaderExtends) {
  ASSERT_TRUE(Grant(7, 10).ok());
  auto next = NewLessor();  // a second member's view of the same store
  next->Promote(5);
  now_ += absl::Seconds(8);
  // An entry the old leader (term 4) proposed, applied after promotion.
  internal::LeaseCheckpoint cp;
  cp.set_term(4);
  auto* item = cp.add_items();
  item->set_id(7);
  item->set_remaining_ms(10000);
  Checkpoint(next.get(), cp);
  auto info = next->TimeToLive(7);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->remaining_s, 10);
  now_ += absl::Milliseconds(9900);
  EXPECT_TRUE(next->TakeExpired(10).empty());
}

}  // namespace
}  // namespace lockd::kv
