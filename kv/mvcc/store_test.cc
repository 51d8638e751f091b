#include "kv/mvcc/store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "kv/mvcc/errors.h"

namespace lockd::kv {
namespace {

using etcdserverpb::RangeRequest;
using etcdserverpb::RangeResponse;

class FakeLeases : public LeaseOracle {
 public:
  bool LeaseExists(int64_t id) const override { return ids.count(id) > 0; }
  std::set<int64_t> ids;
};

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/store" +
           std::to_string(n++);
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto s = MvccStore::Open(dir_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }

  // Applies one request in its own batch at the next raft index.
  absl::Status Put(const std::string& k, const std::string& v,
                   int64_t lease = 0,
                   etcdserverpb::PutResponse* out = nullptr) {
    etcdserverpb::PutRequest req;
    req.set_key(k);
    req.set_value(v);
    req.set_lease(lease);
    req.set_prev_kv(true);
    etcdserverpb::PutResponse resp;
    auto b = store_->BeginApply(&leases_);
    absl::Status s = b->Put(req, out ? out : &resp);
    EXPECT_TRUE(b->Commit(++index_).ok());
    return s;
  }

  absl::Status Delete(const std::string& k, const std::string& end,
                      etcdserverpb::DeleteRangeResponse* out = nullptr) {
    etcdserverpb::DeleteRangeRequest req;
    req.set_key(k);
    req.set_range_end(end);
    req.set_prev_kv(true);
    etcdserverpb::DeleteRangeResponse resp;
    auto b = store_->BeginApply(&leases_);
    absl::Status s = b->DeleteRange(req, out ? out : &resp);
    EXPECT_TRUE(b->Commit(++index_).ok());
    return s;
  }

  RangeResponse Range(const std::string& k, const std::string& end = "",
                      int64_t rev = 0) {
    RangeRequest req;
    req.set_key(k);
    req.set_range_end(end);
    req.set_revision(rev);
    RangeResponse resp;
    absl::Status s = store_->Range(req, &resp);
    EXPECT_TRUE(s.ok()) << s;
    return resp;
  }

  std::vector<std::string> Keys(const RangeResponse& r) {
    std::vector<std::string> out;
    for (const auto& kv : r.kvs()) out.push_back(kv.key());
    return out;
  }

  std::string dir_;
  std::unique_ptr<MvccStore> store_;
  FakeLeases leases_;
  uint64_t index_ = 0;
};

TEST_F(StoreTest, Put_AssignsRevisionsVersionsLikeEtcd) {
  EXPECT_EQ(store_->revision(), 1);  // an empty store is at revision 1
  etcdserverpb::PutResponse r1, r2;
  ASSERT_TRUE(Put("a", "1", 0, &r1).ok());
  ASSERT_TRUE(Put("a", "2", 0, &r2).ok());
  ASSERT_TRUE(Put("b", "x").ok());
  EXPECT_EQ(r1.header().revision(), 2);
  EXPECT_FALSE(r1.has_prev_kv());
  EXPECT_EQ(r2.prev_kv().value(), "1");
  RangeResponse a = Range("a");
  ASSERT_EQ(a.kvs_size(), 1);
  EXPECT_EQ(a.kvs(0).value(), "2");
  EXPECT_EQ(a.kvs(0).create_revision(), 2);
  EXPECT_EQ(a.kvs(0).mod_revision(), 3);
  EXPECT_EQ(a.kvs(0).version(), 2);
  EXPECT_EQ(a.header().revision(), 4);
  EXPECT_EQ(store_->applied_index(), 3u);
}

TEST_F(StoreTest, Range_HistoricalReadsAndErrors) {
  ASSERT_TRUE(Put("a", "1").ok());    // rev 2
  ASSERT_TRUE(Put("a", "2").ok());    // rev 3
  ASSERT_TRUE(Delete("a", "").ok());  // rev 4
  EXPECT_EQ(Range("a").kvs_size(), 0);
  EXPECT_EQ(Range("a", "", 3).kvs(0).value(), "2");
  EXPECT_EQ(Range("a", "", 2).kvs(0).value(), "1");
  EXPECT_EQ(Range("a", "", 1).kvs_size(), 0);
  RangeRequest future;
  future.set_key("a");
  future.set_revision(5);
  RangeResponse resp;
  EXPECT_EQ(store_->Range(future, &resp), ErrFutureRev());
}

TEST_F(StoreTest, Range_PrefixFromKeyLimitCountSortFilters) {
  for (const char* k : {"foo/a", "foo/b", "foo/c", "fop", "zzz"}) {
    ASSERT_TRUE(Put(k, std::string("v-") + k).ok());
  }
  EXPECT_EQ(Keys(Range("foo/", "foo0")),
            (std::vector<std::string>{"foo/a", "foo/b", "foo/c"}));
  EXPECT_EQ(Keys(Range("fop", std::string(1, '\0'))),
            (std::vector<std::string>{"fop", "zzz"}));
  EXPECT_EQ(Range(std::string(1, '\0'), std::string(1, '\0')).kvs_size(), 5);
  EXPECT_EQ(Range("b", "a").kvs_size(), 0);  // empty interval

  RangeRequest req;
  req.set_key("foo/");
  req.set_range_end("foo0");
  req.set_limit(2);
  RangeResponse resp;
  ASSERT_TRUE(store_->Range(req, &resp).ok());
  EXPECT_EQ(resp.kvs_size(), 2);
  EXPECT_TRUE(resp.more());
  EXPECT_EQ(resp.count(), 3);

  req.set_limit(0);
  req.set_sort_order(RangeRequest::DESCEND);
  req.set_sort_target(RangeRequest::KEY);
  resp.Clear();
  ASSERT_TRUE(store_->Range(req, &resp).ok());
  EXPECT_EQ(Keys(resp), (std::vector<std::string>{"foo/c", "foo/b", "foo/a"}));

  req.set_sort_order(RangeRequest::NONE);
  req.set_min_mod_revision(3);
  req.set_max_mod_revision(3);
  resp.Clear();
  ASSERT_TRUE(store_->Range(req, &resp).ok());
  EXPECT_EQ(Keys(resp), (std::vector<std::string>{"foo/b"}));
  EXPECT_EQ(resp.count(), 3);  // count is before filtering, as in etcd

  RangeRequest count_only;
  count_only.set_key("f");
  count_only.set_range_end("g");
  count_only.set_count_only(true);
  resp.Clear();
  ASSERT_TRUE(store_->Range(count_only, &resp).ok());
  EXPECT_EQ(resp.count(), 4);
  EXPECT_EQ(resp.kvs_size(), 0);

  RangeRequest keys_only;
  keys_only.set_key("zzz");
  keys_only.set_keys_only(true);
  resp.Clear();
  ASSERT_TRUE(store_->Range(keys_only, &resp).ok());
  EXPECT_EQ(resp.kvs(0).value(), "");
  EXPECT_EQ(resp.kvs(0).version(), 1);
}

TEST_F(StoreTest, DeleteRange_OneRevisionWithPrevKvs) {
  ASSERT_TRUE(Put("a", "1").ok());
  ASSERT_TRUE(Put("b", "2").ok());
  etcdserverpb::DeleteRangeResponse d;
  ASSERT_TRUE(Delete("a", "c", &d).ok());
  EXPECT_EQ(d.deleted(), 2);
  EXPECT_EQ(d.prev_kvs_size(), 2);
  EXPECT_EQ(store_->revision(), 4);  // both deletes share revision 4
  // Deleting nothing leaves the revision alone.
  ASSERT_TRUE(Delete("a", "c", &d).ok());
  EXPECT_EQ(store_->revision(), 4);
  // The key comes back with a fresh create revision and version 1.
  ASSERT_TRUE(Put("a", "3").ok());
  RangeResponse a = Range("a");
  EXPECT_EQ(a.kvs(0).create_revision(), 5);
  EXPECT_EQ(a.kvs(0).version(), 1);
}

TEST_F(StoreTest, Txn_ComparesBranchesAndSeesOwnWrites) {
  ASSERT_TRUE(Put("k", "v1").ok());  // rev 2
  etcdserverpb::TxnRequest txn;
  auto* cmp = txn.add_compare();
  cmp->set_key("k");
  cmp->set_target(etcdserverpb::Compare::VALUE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_value("v1");
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key("k");
  put->set_value("v2");
  auto* put2 = txn.add_success()->mutable_request_put();
  put2->set_key("other");
  put2->set_value("o");
  txn.add_success()->mutable_request_range()->set_key("k");
  txn.add_failure()->mutable_request_range()->set_key("k");

  etcdserverpb::TxnResponse resp;
  auto b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Txn(txn, &resp).ok());
  ASSERT_TRUE(b->Commit(++index_).ok());
  EXPECT_TRUE(resp.succeeded());
  ASSERT_EQ(resp.responses_size(), 3);
  // The read inside the txn sees the txn's own write.
  EXPECT_EQ(resp.responses(2).response_range().kvs(0).value(), "v2");
  EXPECT_EQ(resp.header().revision(), 3);
  // Both writes share main revision 3.
  EXPECT_EQ(Range("other").kvs(0).mod_revision(), 3);
  EXPECT_EQ(store_->revision(), 3);

  // Same txn again: the compare fails now, the failure branch runs.
  resp.Clear();
  b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Txn(txn, &resp).ok());
  ASSERT_TRUE(b->Commit(++index_).ok());
  EXPECT_FALSE(resp.succeeded());
  EXPECT_EQ(resp.responses(0).response_range().kvs(0).value(), "v2");
  EXPECT_EQ(store_->revision(), 3);

  // Compare on a missing key: version 0 equals, value never matches.
  etcdserverpb::TxnRequest missing;
  auto* c2 = missing.add_compare();
  c2->set_key("nope");
  c2->set_target(etcdserverpb::Compare::VERSION);
  c2->set_result(etcdserverpb::Compare::EQUAL);
  c2->set_version(0);
  resp.Clear();
  b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Txn(missing, &resp).ok());
  ASSERT_TRUE(b->Commit(++index_).ok());
  EXPECT_TRUE(resp.succeeded());
}

TEST_F(StoreTest, Txn_ErrorRollsBackWholeTxnOnly) {
  ASSERT_TRUE(Put("k", "v1").ok());
  etcdserverpb::TxnRequest txn;
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key("k");
  put->set_value("changed");
  auto* bad = txn.add_success()->mutable_request_put();
  bad->set_key("leased");
  bad->set_lease(42);  // no such lease

  auto b = store_->BeginApply(&leases_);
  etcdserverpb::PutRequest before;
  before.set_key("before");
  etcdserverpb::PutResponse pr;
  ASSERT_TRUE(b->Put(before, &pr).ok());
  etcdserverpb::TxnResponse resp;
  EXPECT_EQ(b->Txn(txn, &resp), ErrLeaseNotFound());
  ASSERT_TRUE(b->Commit(++index_).ok());
  // The put before the txn in the same batch stays; the txn left nothing.
  EXPECT_EQ(Range("before").kvs_size(), 1);
  EXPECT_EQ(Range("k").kvs(0).value(), "v1");
  EXPECT_EQ(Range("leased").kvs_size(), 0);
  EXPECT_EQ(store_->revision(), 3);
}

TEST_F(StoreTest, Put_IgnoreValueAndLease) {
  leases_.ids.insert(7);
  ASSERT_TRUE(Put("k", "v", 7).ok());
  etcdserverpb::PutRequest req;
  req.set_key("k");
  req.set_ignore_value(true);
  req.set_ignore_lease(true);
  etcdserverpb::PutResponse resp;
  auto b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Put(req, &resp).ok());
  req.set_key("missing");
  EXPECT_EQ(b->Put(req, &resp), ErrKeyNotFound());
  ASSERT_TRUE(b->Commit(++index_).ok());
  auto kv = Range("k").kvs(0);
  EXPECT_EQ(kv.value(), "v");
  EXPECT_EQ(kv.lease(), 7);
  EXPECT_EQ(kv.version(), 2);
}

TEST_F(StoreTest, Leases_KeysFollowAttachAndRevokeInOneRevision) {
  leases_.ids = {1, 2};
  ASSERT_TRUE(Put("a", "1", 1).ok());
  ASSERT_TRUE(Put("b", "1", 1).ok());
  ASSERT_TRUE(Put("c", "1", 2).ok());
  ASSERT_TRUE(Put("b", "2", 2).ok());  // b moves to lease 2
  std::vector<std::string> keys;
  ASSERT_TRUE(store_->LeaseKeys(1, &keys).ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"a"}));
  keys.clear();
  ASSERT_TRUE(store_->LeaseKeys(2, &keys).ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"b", "c"}));

  auto b = store_->BeginApply(&leases_);
  absl::StatusOr<int64_t> n = b->DeleteLeaseKeys(2);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  std::vector<mvccpb::Event> events = b->TakeEvents();
  ASSERT_TRUE(b->Commit(++index_).ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kv().mod_revision(), events[1].kv().mod_revision());
  EXPECT_EQ(events[0].type(), mvccpb::Event::DELETE);
  EXPECT_EQ(Keys(Range("a", "z")), (std::vector<std::string>{"a"}));
  keys.clear();
  ASSERT_TRUE(store_->LeaseKeys(2, &keys).ok());
  EXPECT_TRUE(keys.empty());
}

TEST_F(StoreTest, Commit_AppliedIndexSurvivesReopenUncommittedDoesNot) {
  ASSERT_TRUE(Put("a", "1").ok());
  {
    auto b = store_->BeginApply(&leases_);
    etcdserverpb::PutRequest req;
    req.set_key("lost");
    etcdserverpb::PutResponse resp;
    ASSERT_TRUE(b->Put(req, &resp).ok());
    // Dropped without Commit: as if the process died mid-apply.
  }
  Reopen();
  EXPECT_EQ(store_->applied_index(), 1u);
  EXPECT_EQ(store_->revision(), 2);
  EXPECT_EQ(Range("lost").kvs_size(), 0);
  EXPECT_EQ(Range("a").kvs(0).value(), "1");
}

TEST_F(StoreTest, PutRecord_CommittedWithTheBatchAndSurvivesReopen) {
  EXPECT_TRUE(absl::IsNotFound(store_->GetRecord("members").status()));
  {
    auto b = store_->BeginApply(&leases_);
    b->PutRecord("members", "v1");
    // Not visible before Commit, and gone if the batch is dropped.
  }
  EXPECT_TRUE(absl::IsNotFound(store_->GetRecord("members").status()));
  auto b = store_->BeginApply(&leases_);
  b->PutRecord("members", "v2");
  ASSERT_TRUE(b->Commit(++index_).ok());
  b.reset();
  Reopen();
  absl::StatusOr<std::string> got = store_->GetRecord("members");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "v2");
  EXPECT_EQ(store_->applied_index(), index_);
  // Records do not show up as keys or revisions.
  EXPECT_EQ(store_->revision(), 1);
  EXPECT_EQ(Range("\0", "\xff").kvs_size(), 0);
}

TEST_F(StoreTest, RebaseOnNewLog_KeepsDataDropsRecordsAndAppliedIndex) {
  leases_.ids.insert(7);
  ASSERT_TRUE(Put("a", "1").ok());
  ASSERT_TRUE(Put("b", "2", 7).ok());
  {
    auto b = store_->BeginApply(&leases_);
    b->PutRecord("members", "old cluster");
    b->PutRecord("other", "kept");
    ASSERT_TRUE(b->Commit(++index_).ok());
  }
  const int64_t revision = store_->revision();
  absl::StatusOr<MvccStore::HashResult> before = store_->HashKV(0);
  ASSERT_TRUE(before.ok());
  {
    // Not while a batch is open.
    auto b = store_->BeginApply(&leases_);
    EXPECT_TRUE(
        absl::IsFailedPrecondition(store_->RebaseOnNewLog({"members"})));
  }
  ASSERT_TRUE(store_->RebaseOnNewLog({"members"}).ok());
  EXPECT_EQ(store_->applied_index(), 0u);
  Reopen();
  EXPECT_EQ(store_->applied_index(), 0u);
  EXPECT_EQ(store_->revision(), revision);
  EXPECT_TRUE(absl::IsNotFound(store_->GetRecord("members").status()));
  EXPECT_EQ(*store_->GetRecord("other"), "kept");
  absl::StatusOr<MvccStore::HashResult> after = store_->HashKV(0);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->hash, before->hash);
  std::vector<std::string> keys;
  ASSERT_TRUE(store_->LeaseKeys(7, &keys).ok());
  EXPECT_EQ(keys, std::vector<std::string>{"b"});
  // The new log's first entry applies at index 1, on the same revisions.
  index_ = 0;
  ASSERT_TRUE(Put("c", "3").ok());
  EXPECT_EQ(store_->applied_index(), 1u);
  EXPECT_EQ(store_->revision(), revision + 1);
}

TEST_F(StoreTest, HashKV_SameHistorySameHashWhateverPhysicalCompaction) {
  std::string other_dir = dir_ + "-twin";
  auto twin_or = MvccStore::Open(other_dir);
  ASSERT_TRUE(twin_or.ok());
  std::unique_ptr<MvccStore> twin = *std::move(twin_or);
  // Apply the same log to both stores.
  auto apply = [&](MvccStore* s, uint64_t index, const std::string& k,
                   const std::string& v) {
    etcdserverpb::PutRequest req;
    req.set_key(k);
    req.set_value(v);
    etcdserverpb::PutResponse resp;
    auto b = s->BeginApply(&leases_);
    ASSERT_TRUE(b->Put(req, &resp).ok());
    ASSERT_TRUE(b->Commit(index).ok());
  };
  for (uint64_t i = 1; i <= 20; ++i) {
    apply(store_.get(), i, "k" + std::to_string(i % 4), std::to_string(i));
    apply(twin.get(), i, "k" + std::to_string(i % 4), std::to_string(i));
  }
  for (MvccStore* s : {store_.get(), twin.get()}) {
    etcdserverpb::CompactionRequest c;
    c.set_revision(10);
    etcdserverpb::CompactionResponse cr;
    auto b = s->BeginApply(&leases_);
    ASSERT_TRUE(b->Compact(c, &cr).ok());
    ASSERT_TRUE(b->Commit(21).ok());
  }
  // Only one of them has reclaimed the space.
  absl::StatusOr<bool> done;
  do {
    done = store_->CompactSome(2);
    ASSERT_TRUE(done.ok());
  } while (!*done);
  auto a = store_->HashKV(0), b = twin->HashKV(0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->hash, b->hash);
  EXPECT_EQ(a->revision, 21);
  // A different history hashes differently.
  apply(twin.get(), 22, "diverged", "x");
  EXPECT_NE(twin->HashKV(0)->hash, a->hash);
  EXPECT_EQ(twin->HashKV(21)->hash, a->hash);
  EXPECT_TRUE(store_->Defragment().ok());
  EXPECT_EQ(store_->HashKV(0)->hash, a->hash);
}

TEST_F(StoreTest, Alarm_NoSpaceBlocksWritesNotReadsOrDeletes) {
  ASSERT_TRUE(Put("a", "1").ok());
  etcdserverpb::AlarmRequest on;
  on.set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  on.set_memberid(9);
  on.set_alarm(etcdserverpb::NOSPACE);
  etcdserverpb::AlarmResponse ar;
  auto b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Alarm(on, &ar).ok());
  ASSERT_EQ(ar.alarms_size(), 1);
  // Later requests in the same batch already see the alarm.
  etcdserverpb::PutRequest put;
  put.set_key("b");
  etcdserverpb::PutResponse pr;
  EXPECT_EQ(b->Put(put, &pr), ErrNoSpace());
  ASSERT_TRUE(b->Commit(++index_).ok());
  ASSERT_EQ(store_->Alarms().size(), 1u);

  b = store_->BeginApply(&leases_);
  etcdserverpb::TxnRequest writes;
  writes.add_failure()->mutable_request_put()->set_key("c");
  etcdserverpb::TxnResponse tr;
  EXPECT_EQ(b->Txn(writes, &tr), ErrNoSpace());
  etcdserverpb::TxnRequest reads;
  reads.add_success()->mutable_request_range()->set_key("a");
  EXPECT_TRUE(b->Txn(reads, &tr).ok());
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("a");
  etcdserverpb::DeleteRangeResponse dr;
  EXPECT_TRUE(b->DeleteRange(del, &dr).ok());
  ASSERT_TRUE(b->Commit(++index_).ok());

  // Alarms are replicated state: they survive a restart.
  Reopen();
  ASSERT_EQ(store_->Alarms().size(), 1u);
  EXPECT_EQ(store_->Alarms()[0].memberid(), 9u);
  etcdserverpb::AlarmRequest off = on;
  off.set_action(etcdserverpb::AlarmRequest::DEACTIVATE);
  b = store_->BeginApply(&leases_);
  // GET answers the alarms of the type asked, as etcd's.
  etcdserverpb::AlarmRequest get;
  get.set_action(etcdserverpb::AlarmRequest::GET);
  get.set_alarm(etcdserverpb::CORRUPT);
  ar.Clear();
  ASSERT_TRUE(b->Alarm(get, &ar).ok());
  EXPECT_EQ(ar.alarms_size(), 0);
  get.set_alarm(etcdserverpb::NONE);
  ASSERT_TRUE(b->Alarm(get, &ar).ok());
  EXPECT_EQ(ar.alarms_size(), 1);
  // DEACTIVATE answers what it cleared.
  ar.Clear();
  ASSERT_TRUE(b->Alarm(off, &ar).ok());
  ASSERT_EQ(ar.alarms_size(), 1);
  EXPECT_EQ(ar.alarms(0).alarm(), etcdserverpb::NOSPACE);
  ar.Clear();
  ASSERT_TRUE(b->Alarm(off, &ar).ok());
  EXPECT_EQ(ar.alarms_size(), 0);
  EXPECT_TRUE(b->Put(put, &pr).ok());
  ASSERT_TRUE(b->Commit(++index_).ok());
  EXPECT_TRUE(store_->Alarms().empty());
}

TEST_F(StoreTest, Put_EventCarriesBothVersionsAndResponseKeepsPrevious) {
  leases_.ids.insert(7);
  ASSERT_TRUE(Put("k", "old", 7).ok());
  etcdserverpb::PutRequest req;
  req.set_key("k");
  req.set_value("new");
  req.set_prev_kv(true);
  etcdserverpb::PutResponse resp;
  auto b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Put(req, &resp).ok());
  std::vector<mvccpb::Event> events = b->TakeEvents();
  ASSERT_TRUE(b->Commit(++index_).ok());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type(), mvccpb::Event::PUT);
  EXPECT_EQ(events[0].kv().key(), "k");
  EXPECT_EQ(events[0].kv().value(), "new");
  EXPECT_EQ(events[0].kv().version(), 2);
  EXPECT_EQ(events[0].kv().create_revision(), 2);
  EXPECT_EQ(events[0].kv().mod_revision(), 3);
  EXPECT_EQ(events[0].kv().lease(), 0);
  EXPECT_EQ(events[0].prev_kv().value(), "old");
  EXPECT_EQ(events[0].prev_kv().lease(), 7);
  EXPECT_EQ(resp.prev_kv().value(), "old");
  EXPECT_EQ(resp.prev_kv().mod_revision(), 2);
  // What the store holds is what the event says.
  RangeResponse r = Range("k");
  ASSERT_EQ(r.kvs_size(), 1);
  EXPECT_EQ(r.kvs(0).SerializeAsString(), events[0].kv().SerializeAsString());
  // The lease lost its key; history has both versions.
  std::vector<std::string> keys;
  ASSERT_TRUE(store_->LeaseKeys(7, &keys).ok());
  EXPECT_TRUE(keys.empty());
  EXPECT_EQ(Range("k", "", 2).kvs(0).value(), "old");
}

TEST_F(StoreTest, History_EventsInOrderAndCompacted) {
  ASSERT_TRUE(Put("a", "1").ok());    // 2
  ASSERT_TRUE(Put("b", "1").ok());    // 3
  ASSERT_TRUE(Delete("a", "").ok());  // 4
  std::vector<mvccpb::Event> events;
  int64_t next = 0;
  ASSERT_TRUE(store_->History(3, 100, &events, &next).ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kv().key(), "b");
  EXPECT_EQ(events[1].type(), mvccpb::Event::DELETE);
  EXPECT_EQ(events[1].kv().mod_revision(), 4);
  EXPECT_EQ(next, 5);

  etcdserverpb::CompactionRequest c;
  c.set_revision(3);
  etcdserverpb::CompactionResponse cr;
  auto b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Compact(c, &cr).ok());
  EXPECT_EQ(b->Compact(c, &cr), ErrCompacted());
  ASSERT_TRUE(b->Commit(++index_).ok());
  events.clear();
  EXPECT_EQ(store_->History(2, 100, &events, &next), ErrCompacted());
  EXPECT_TRUE(store_->History(3, 100, &events, &next).ok());
}

// A model of etcd's semantics: the whole state at every revision.
using Model = std::map<std::string, mvccpb::KeyValue>;

TEST_F(StoreTest, RandomOps_MatchModelAtEveryRevisionThroughCompaction) {
  std::mt19937 rng(1234);
  std::vector<Model> states(2);  // states[rev]; revision 1 is empty
  std::vector<int64_t> delete_revs;
  auto key = [&] { return std::string(1, 'a' + rng() % 12); };
  for (int step = 0; step < 400; ++step) {
    Model next = states.back();
    int64_t rev = static_cast<int64_t>(states.size());
    int op = rng() % 10;
    if (op < 6) {
      std::string k = key(), v = std::to_string(rng() % 1000);
      ASSERT_TRUE(Put(k, v).ok());
      mvccpb::KeyValue kv;
      auto it = next.find(k);
      kv.set_key(k);
      kv.set_value(v);
      kv.set_mod_revision(rev);
      kv.set_create_revision(it == next.end() ? rev
                                              : it->second.create_revision());
      kv.set_version(it == next.end() ? 1 : it->second.version() + 1);
      next[k] = kv;
      states.push_back(next);
    } else {
      std::string a = key(), b = key();
      if (b < a) std::swap(a, b);
      ASSERT_TRUE(Delete(a, b).ok());
      bool any = false;
      for (auto it = next.lower_bound(a); it != next.end() && it->first < b;) {
        it = next.erase(it);
        any = true;
      }
      if (any) {
        delete_revs.push_back(static_cast<int64_t>(states.size()));
        states.push_back(next);
      }
    }
    ASSERT_EQ(store_->revision(), static_cast<int64_t>(states.size()) - 1);
  }

  auto check_from = [&](int64_t first) {
    for (int64_t rev = first; rev < static_cast<int64_t>(states.size());
         ++rev) {
      RangeResponse r = Range(std::string(1, '\0'), std::string(1, '\0'), rev);
      ASSERT_EQ(r.kvs_size(), static_cast<int>(states[rev].size())) << rev;
      int i = 0;
      for (const auto& [k, kv] : states[rev]) {
        EXPECT_EQ(r.kvs(i).SerializeAsString(), kv.SerializeAsString())
            << "rev " << rev << " key " << k;
        ++i;
      }
    }
  };
  check_from(1);

  // Compact half-way, at a revision that deleted keys (its tombstones must
  // survive for watchers starting there), physically in small steps.
  int64_t compact_at = 0;
  for (int64_t r : delete_revs) {
    if (r <= static_cast<int64_t>(states.size()) / 2) compact_at = r;
  }
  ASSERT_GT(compact_at, 2);
  etcdserverpb::CompactionRequest c;
  c.set_revision(compact_at);
  etcdserverpb::CompactionResponse cr;
  auto b = store_->BeginApply(&leases_);
  ASSERT_TRUE(b->Compact(c, &cr).ok());
  ASSERT_TRUE(b->Commit(++index_).ok());
  bool done = false;
  for (int i = 0; i < 100 && !done; ++i) {
    absl::StatusOr<bool> d = store_->CompactSome(3);
    ASSERT_TRUE(d.ok()) << d.status();
    done = *d;
  }
  ASSERT_TRUE(done);
  check_from(compact_at);
  RangeRequest old;
  old.set_key("a");
  old.set_revision(compact_at - 1);
  RangeResponse resp;
  EXPECT_EQ(store_->Range(old, &resp), ErrCompacted());

  // History from the compact revision on is complete: replaying it over the
  // state just before compact_at yields the current state.
  std::vector<mvccpb::Event> events;
  int64_t next = 0;
  ASSERT_TRUE(store_->History(compact_at, 100000, &events, &next).ok());
  // The events of compact_at itself are exactly what that revision changed.
  std::set<std::string> deleted_at_compact;
  for (const auto& [k, kv] : states[compact_at - 1]) {
    if (!states[compact_at].count(k)) deleted_at_compact.insert(k);
  }
  ASSERT_FALSE(deleted_at_compact.empty());
  std::set<std::string> delete_events_at_compact;
  for (const auto& ev : events) {
    if (ev.kv().mod_revision() == compact_at &&
        ev.type() == mvccpb::Event::DELETE) {
      delete_events_at_compact.insert(ev.kv().key());
    }
  }
  EXPECT_EQ(delete_events_at_compact, deleted_at_compact);
  Model replay = states[compact_at - 1];
  for (const auto& ev : events) {
    if (ev.type() == mvccpb::Event::PUT) {
      replay[ev.kv().key()] = ev.kv();
    } else {
      replay.erase(ev.kv().key());
    }
  }
  ASSERT_EQ(replay.size(), states.back().size());
  for (const auto& [k, kv] : states.back()) {
    EXPECT_EQ(replay[k].SerializeAsString(), kv.SerializeAsString());
  }

  // And all of it survives a reopen.
  auto hash_before = store_->HashKV(0);
  ASSERT_TRUE(hash_before.ok());
  Reopen();
  check_from(compact_at);
  auto hash_after = store_->HashKV(0);
  ASSERT_TRUE(hash_after.ok());
  EXPECT_EQ(hash_after->hash, hash_before->hash);
  EXPECT_EQ(hash_after->compact_revision, compact_at);
  EXPECT_EQ(store_->HashKV(compact_at - 1).status(), ErrCompacted());
}

// Many requests in one batch, as one raft Ready applies them: each sees the
// writes of those before it (puts, deletes, transactions that read ranges,
// a transaction that fails and leaves nothing, keys a lease revocation
// deletes), checked against a model after every request and, at the end, at
// every revision.
TEST_F(StoreTest, RandomOps_InSharedBatchesSeeEarlierWrites) {
  std::mt19937 rng(99);
  leases_.ids = {1};
  std::vector<Model> states(2);  // states[rev]; revision 1 is empty
  auto key = [&] { return std::string(1, 'a' + rng() % 10); };
  auto same = [](const mvccpb::KeyValue& a, const mvccpb::KeyValue& b) {
    return a.SerializeAsString() == b.SerializeAsString();
  };
  auto put_kv = [&](const Model& m, const std::string& k, const std::string& v,
                    int64_t lease, int64_t rev) {
    mvccpb::KeyValue kv;
    auto it = m.find(k);
    kv.set_key(k);
    kv.set_value(v);
    kv.set_mod_revision(rev);
    kv.set_create_revision(it == m.end() ? rev : it->second.create_revision());
    kv.set_version(it == m.end() ? 1 : it->second.version() + 1);
    kv.set_lease(lease);
    return kv;
  };
  for (int batch = 0; batch < 60; ++batch) {
    auto b = store_->BeginApply(&leases_);
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) {
      Model next = states.back();
      const int64_t rev = static_cast<int64_t>(states.size());
      const int op = static_cast<int>(rng() % 10);
      SCOPED_TRACE(::testing::Message()
                   << "batch " << batch << " op " << op << " rev " << rev);
      if (op < 4) {
        etcdserverpb::PutRequest req;
        req.set_key(key());
        req.set_value(std::to_string(rng() % 1000));
        req.set_lease(rng() % 3 == 0 ? 1 : 0);
        req.set_prev_kv(true);
        etcdserverpb::PutResponse resp;
        ASSERT_TRUE(b->Put(req, &resp).ok());
        auto it = next.find(req.key());
        ASSERT_EQ(resp.has_prev_kv(), it != next.end());
        if (it != next.end()) {
          EXPECT_TRUE(same(resp.prev_kv(), it->second));
        }
        next[req.key()] =
            put_kv(next, req.key(), req.value(), req.lease(), rev);
        states.push_back(next);
      } else if (op < 6) {
        std::string a = key(), e = key();
        if (e < a) std::swap(a, e);
        etcdserverpb::DeleteRangeRequest req;
        req.set_key(a);
        req.set_range_end(e);
        etcdserverpb::DeleteRangeResponse resp;
        ASSERT_TRUE(b->DeleteRange(req, &resp).ok());
        int64_t gone = 0;
        for (auto it = next.lower_bound(a);
             it != next.end() && it->first < e;) {
          it = next.erase(it);
          ++gone;
        }
        EXPECT_EQ(resp.deleted(), gone);
        if (gone > 0) states.push_back(next);
      } else if (op < 8) {
        // A put, then a range over what the batch holds so far.
        etcdserverpb::TxnRequest txn;
        auto* put = txn.add_success()->mutable_request_put();
        put->set_key(key());
        put->set_value(std::to_string(rng() % 1000));
        std::string a = key(), e = key();
        if (e < a) std::swap(a, e);
        auto* range = txn.add_success()->mutable_request_range();
        range->set_key(a);
        range->set_range_end(e);
        etcdserverpb::TxnResponse resp;
        ASSERT_TRUE(b->Txn(txn, &resp).ok());
        ASSERT_TRUE(resp.succeeded());
        next[put->key()] = put_kv(next, put->key(), put->value(), 0, rev);
        std::vector<mvccpb::KeyValue> want;
        for (auto it = next.lower_bound(a); it != next.end() && it->first < e;
             ++it) {
          want.push_back(it->second);
        }
        const auto& got = resp.responses(1).response_range().kvs();
        ASSERT_EQ(got.size(), static_cast<int>(want.size()));
        for (size_t j = 0; j < want.size(); ++j) {
          EXPECT_TRUE(same(got[static_cast<int>(j)], want[j])) << j;
        }
        states.push_back(next);
      } else if (op < 9) {
        // Fails on its second put: its first must leave no trace, for the
        // requests after it in the batch too.
        etcdserverpb::TxnRequest txn;
        auto* put = txn.add_success()->mutable_request_put();
        put->set_key(key());
        put->set_value("never");
        txn.add_success()->mutable_request_range()->set_key(put->key());
        auto* bad = txn.add_success()->mutable_request_put();
        bad->set_key(key());
        bad->set_lease(42);
        etcdserverpb::TxnResponse resp;
        EXPECT_EQ(b->Txn(txn, &resp), ErrLeaseNotFound());
        etcdserverpb::TxnRequest read;
        read.add_success()->mutable_request_range()->set_key(put->key());
        etcdserverpb::TxnResponse after;
        ASSERT_TRUE(b->Txn(read, &after).ok());
        auto it = next.find(put->key());
        const auto& kvs = after.responses(0).response_range().kvs();
        ASSERT_EQ(kvs.size(), it == next.end() ? 0 : 1);
        if (it != next.end()) {
          EXPECT_TRUE(same(kvs[0], it->second));
        }
      } else {
        absl::StatusOr<int64_t> gone = b->DeleteLeaseKeys(1);
        ASSERT_TRUE(gone.ok()) << gone.status();
        int64_t want = 0;
        for (auto it = next.begin(); it != next.end();) {
          if (it->second.lease() == 1) {
            it = next.erase(it);
            ++want;
          } else {
            ++it;
          }
        }
        EXPECT_EQ(*gone, want);
        if (want > 0) states.push_back(next);
      }
    }
    ASSERT_TRUE(b->Commit(++index_).ok());
    ASSERT_EQ(store_->revision(), static_cast<int64_t>(states.size()) - 1);
  }
  for (int64_t rev = 1; rev < static_cast<int64_t>(states.size()); ++rev) {
    RangeResponse r = Range(std::string(1, '\0'), std::string(1, '\0'), rev);
    ASSERT_EQ(r.kvs_size(), static_cast<int>(states[rev].size())) << rev;
    int i = 0;
    for (const auto& [k, kv] : states[rev]) {
      EXPECT_TRUE(same(r.kvs(i), kv)) << "rev " << rev << " key " << k;
      ++i;
    }
  }
  std::vector<std::string> keys;
  ASSERT_TRUE(store_->LeaseKeys(1, &keys).ok());
  std::vector<std::string> want_keys;
  for (const auto& [k, kv] : states.back()) {
    if (kv.lease() == 1) want_keys.push_back(k);
  }
  EXPECT_EQ(keys, want_keys);
}

// A read's header revision and its data come from one snapshot, also while
// batches commit and compaction deletes beside it: every batch puts "k", so
// "k"'s mod revision is the store's revision at any snapshot.
TEST_F(StoreTest, Range_HeaderRevisionMatchesDataUnderConcurrentCommits) {
  std::atomic<bool> stop{false};
  std::atomic<int> mismatches{0}, reads{0};
  auto reader = [&] {
    while (!stop.load()) {
      RangeRequest req;
      req.set_key("k");
      RangeResponse resp;
      if (!store_->Range(req, &resp).ok()) continue;
      reads.fetch_add(1);
      if (resp.kvs_size() == 1 &&
          resp.kvs(0).mod_revision() != resp.header().revision()) {
        mismatches.fetch_add(1);
      }
    }
  };
  std::thread r1(reader), r2(reader);
  std::thread compactor([&] {
    while (!stop.load()) (void)store_->CompactSome(8);
  });
  for (int i = 0; i < 3000; ++i) {
    etcdserverpb::PutRequest put;
    put.set_key("k");
    put.set_value(std::to_string(i));
    etcdserverpb::PutResponse pr;
    auto b = store_->BeginApply(&leases_);
    ASSERT_TRUE(b->Put(put, &pr).ok());
    if (i % 100 == 99) {
      etcdserverpb::CompactionRequest c;
      c.set_revision(pr.header().revision() - 10);
      etcdserverpb::CompactionResponse cr;
      ASSERT_TRUE(b->Compact(c, &cr).ok());
    }
    ASSERT_TRUE(b->Commit(++index_).ok());
  }
  stop = true;
  r1.join();
  r2.join();
  compactor.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(mismatches.load(), 0) << "of " << reads.load() << " reads";
}

}  // namespace
}  // namespace lockd::kv
