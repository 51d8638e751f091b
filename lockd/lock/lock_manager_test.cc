#include "lockd/lock/lock_manager.h"

#include <stdlib.h>

#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "lockd/util/clock.h"

namespace lockd::lock {
namespace {

// A real store in a fresh directory; writes go through ApplyBatch and the
// events are handed to the manager as the state machine's hook would.
class LockManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/lockmgrXXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    auto store = kv::MvccStore::Open(tmpl);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    manager_ = std::make_unique<LockManager>(store_.get(), Limits{2, 3});
  }

  // Lease 0: the manager only reads keys, leases are the writers' business.
  int64_t Put(const std::string& key) {
    auto batch = store_->BeginApply(&no_leases_);
    etcdserverpb::PutRequest req;
    req.set_key(key);
    etcdserverpb::PutResponse resp;
    EXPECT_TRUE(batch->Put(req, &resp).ok());
    Finish(batch.get());
    return store_->revision();
  }
  void Delete(const std::string& key) {
    auto batch = store_->BeginApply(&no_leases_);
    etcdserverpb::DeleteRangeRequest req;
    req.set_key(key);
    etcdserverpb::DeleteRangeResponse resp;
    EXPECT_TRUE(batch->DeleteRange(req, &resp).ok());
    Finish(batch.get());
  }
  void Finish(kv::ApplyBatch* batch) {
    std::vector<mvccpb::Event> events = batch->TakeEvents();
    const int64_t revision = batch->revision();
    ASSERT_TRUE(batch->Commit(++index_).ok());
    manager_->OnCommit(events, revision);
  }
  static WaitScope For(absl::Duration d) {
    WaitScope s;
    s.deadline = MonotonicNow() + d;
    return s;
  }

  class NoLeases final : public kv::LeaseOracle {
   public:
    bool LeaseExists(int64_t) const override { return true; }
  } no_leases_;
  std::unique_ptr<kv::MvccStore> store_;
  std::unique_ptr<LockManager> manager_;
  uint64_t index_ = 0;
};

TEST(LockKeysTest, OwnerKeyAndPrefixEnd) {
  EXPECT_EQ(OwnerKey("job", 0x694d71ddacfda227), "job/694d71ddacfda227");
  EXPECT_EQ(Prefix("job"), "job/");
  EXPECT_EQ(PrefixEnd("job/"), "job0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
}

TEST_F(LockManagerTest, OldestKeyOwnsAtOnce) {
  const int64_t rev = Put("l/1");
  absl::StatusOr<int64_t> owned =
      manager_->WaitForOwnership("l", "l/1", rev, rev, For(absl::Seconds(5)));
  ASSERT_TRUE(owned.ok()) << owned.status();
  EXPECT_GE(*owned, rev);
}

TEST_F(LockManagerTest, HandOverOnPredecessorDelete) {
  const int64_t first = Put("l/1");
  const int64_t second = Put("l/2");
  std::atomic<bool> granted{false};
  std::thread waiter([&] {
    absl::StatusOr<int64_t> owned = manager_->WaitForOwnership(
        "l", "l/2", second, second, For(absl::Seconds(10)));
    EXPECT_TRUE(owned.ok()) << owned.status();
    granted = owned.ok();
  });
  // Unrelated writes (another lock, a key sorting between) wake nobody
  // into a wrong decision.
  Put("m/1");
  Put("l0");
  EXPECT_FALSE(granted.load());
  (void)first;
  Delete("l/1");
  waiter.join();
  EXPECT_TRUE(granted.load());
}

TEST_F(LockManagerTest, LostKeyIsNeverGranted) {
  Put("l/1");
  const int64_t second = Put("l/2");
  std::thread waiter([&] {
    absl::StatusOr<int64_t> owned = manager_->WaitForOwnership(
        "l", "l/2", second, second, For(absl::Seconds(10)));
    EXPECT_TRUE(absl::IsNotFound(owned.status())) << owned.status();
  });
  // The waiter's own key goes (its lease expired) and then the holder's:
  // with the queue empty it must still not be granted.
  Delete("l/2");
  Delete("l/1");
  waiter.join();
}

TEST_F(LockManagerTest, RecreatedKeyIsNotTheSameContender) {
  const int64_t old_rev = Put("l/2");
  Delete("l/2");
  Put("l/2");
  absl::StatusOr<int64_t> owned = manager_->WaitForOwnership(
      "l", "l/2", old_rev, old_rev, For(absl::Seconds(5)));
  EXPECT_TRUE(absl::IsNotFound(owned.status())) << owned.status();
}

TEST_F(LockManagerTest, DeadlineAndCancellationEndTheWait) {
  Put("l/1");
  const int64_t second = Put("l/2");
  absl::StatusOr<int64_t> owned = manager_->WaitForOwnership(
      "l", "l/2", second, second, For(absl::Milliseconds(100)));
  EXPECT_TRUE(absl::IsDeadlineExceeded(owned.status())) << owned.status();
  WaitScope cancelled = For(absl::Seconds(30));
  cancelled.cancelled = [] { return true; };
  owned = manager_->WaitForOwnership("l", "l/2", second, second, cancelled);
  EXPECT_TRUE(absl::IsCancelled(owned.status())) << owned.status();
}

TEST_F(LockManagerTest, WaitsForTheLocalStoreToCatchUp) {
  const int64_t rev = store_->revision() + 1;
  std::thread waiter([&] {
    absl::StatusOr<int64_t> owned = manager_->WaitForOwnership(
        "l", "l/1", rev, rev, For(absl::Seconds(10)));
    EXPECT_TRUE(owned.ok()) << owned.status();
  });
  EXPECT_EQ(Put("l/1"), rev);
  waiter.join();
}

TEST_F(LockManagerTest, SemaphoreSlotsAndSharedReaders) {
  const int64_t r1 = Put("s/1");
  const int64_t r2 = Put("s/2");
  const int64_t r3 = Put("s/3");
  Rule two;
  two.slots = 2;
  EXPECT_TRUE(
      manager_->WaitForOwnership("s", "s/2", r2, r2, For(absl::Seconds(5)), two)
          .ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      manager_
          ->WaitForOwnership("s", "s/3", r3, r3, For(absl::Milliseconds(100)),
                             two)
          .status()));
  std::thread third([&] {
    EXPECT_TRUE(
        manager_
            ->WaitForOwnership("s", "s/3", r3, r3, For(absl::Seconds(10)), two)
            .ok());
  });
  (void)r1;
  Delete("s/1");
  third.join();
  // Readers (value-less keys are not exclusive) share.
  Rule shared;
  shared.shared = true;
  EXPECT_TRUE(
      manager_
          ->WaitForOwnership("s", "s/3", r3, r3, For(absl::Seconds(5)), shared)
          .ok());
}

TEST_F(LockManagerTest, AdmissionIsBounded) {
  auto a = manager_->Admit("x");
  auto b = manager_->Admit("x");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(manager_->Admit("x").status()));
  auto c = manager_->Admit("y");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(manager_->Admit("z").status()));
  EXPECT_EQ(manager_->waiters(), 3u);
  a->reset();
  EXPECT_TRUE(manager_->Admit("z").ok());
}

TEST_F(LockManagerTest, WaitForChangeSeesChangesUnderThePrefix) {
  int64_t rev = 0;
  ASSERT_TRUE(manager_->Oldest("e", &rev).ok());
  Put("e/1");  // committed before the wait: found in the history
  EXPECT_TRUE(manager_->WaitForChange("e", rev, For(absl::Seconds(5))).ok());
  auto oldest = manager_->Oldest("e", &rev);
  ASSERT_TRUE(oldest.ok() && oldest->has_value());
  EXPECT_EQ((*oldest)->key(), "e/1");
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      manager_->WaitForChange("e", rev, For(absl::Milliseconds(50)))));
  std::thread waiter([&] {
    EXPECT_TRUE(manager_->WaitForChange("e", rev, For(absl::Seconds(10))).ok());
  });
  Put("other");
  Put("e/2");
  waiter.join();
}

}  // namespace
}  // namespace lockd::lock
