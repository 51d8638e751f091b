// A follower stopped for longer than the raft log retention catches up
// through a snapshot streamed by the leader, ends up with every
// acknowledged write and the same HashKV as the others, and survives a
// kill -9 right after installing a snapshot.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// A small log retention so a few hundred writes compact past a follower.
const std::vector<std::string> kFlags = {
    "--snapshot-count=50", "--experimental-snapshot-catchup-entries=20"};

std::unique_ptr<etcdserverpb::KV::Stub> KvStub(const std::string& endpoint) {
  return etcdserverpb::KV::NewStub(
      grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
}

// Puts key=value through `endpoint`; true once acknowledged.
bool Put(etcdserverpb::KV::Stub* kv, const std::string& key,
         const std::string& value) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    etcdserverpb::PutRequest req;
    req.set_key(key);
    req.set_value(value);
    etcdserverpb::PutResponse resp;
    grpc::Status s = kv->Put(&ctx, req, &resp);
    if (s.ok()) return true;
    // Only retry what certainly did not apply (no leader yet).
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

// The member's own view of the keys under "s/" (serializable: no quorum,
// straight from its store) and its revision.
bool LocalRange(const std::string& endpoint,
                std::map<std::string, std::string>* out, int64_t* revision) {
  auto kv = KvStub(endpoint);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  etcdserverpb::RangeRequest req;
  req.set_key("s/");
  req.set_range_end("s0");
  req.set_serializable(true);
  etcdserverpb::RangeResponse resp;
  if (!kv->Range(&ctx, req, &resp).ok()) return false;
  out->clear();
  for (const auto& item : resp.kvs()) (*out)[item.key()] = item.value();
  *revision = resp.header().revision();
  return true;
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return done();
}

class SnapshotCatchupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(cluster_.StartMember(i, kFlags).ok());
    const uint64_t leader = cluster_.WaitForLeader(absl::Seconds(30));
    ASSERT_NE(leader, 0u);
    leader_ = cluster_.MemberIndexOf(leader);
    ASSERT_GE(leader_, 0);
    follower_ = (leader_ + 1) % 3;
    kv_ = KvStub(cluster_.member(leader_).endpoint());
  }

  // Writes `n` keys through the leader, remembering what was acknowledged.
  void Write(int n) {
    for (int i = 0; i < n; ++i) {
      std::string key = absl::StrFormat("s/%06d", next_++);
      std::string value = absl::StrCat("v", next_, "-", std::string(64, 'x'));
      ASSERT_TRUE(Put(kv_.get(), key, value)) << key;
      acked_[key] = value;
    }
  }

  // The follower holds every acknowledged write, and all members hash the
  // same at the leader's current revision.
  void ExpectConsistent() {
    std::map<std::string, std::string> leader_view;
    int64_t rev = 0;
    ASSERT_TRUE(
        LocalRange(cluster_.member(leader_).endpoint(), &leader_view, &rev));
    std::map<std::string, std::string> got;
    int64_t got_rev = 0;
    ASSERT_TRUE(WaitUntil(
        [&] {
          return LocalRange(cluster_.member(follower_).endpoint(), &got,
                            &got_rev) &&
                 got_rev >= rev;
        },
        absl::Seconds(30)))
        << "follower at revision " << got_rev << ", leader at " << rev;
    for (const auto& [key, value] : acked_) {
      auto it = got.find(key);
      ASSERT_NE(it, got.end()) << "acknowledged " << key << " missing";
      EXPECT_EQ(it->second, value) << key;
    }
    std::set<uint32_t> hashes;
    for (int i = 0; i < 3; ++i) {
      auto stub = etcdserverpb::Maintenance::NewStub(grpc::CreateChannel(
          cluster_.member(i).endpoint(), grpc::InsecureChannelCredentials()));
      etcdserverpb::HashKVResponse resp;
      grpc::Status st;
      ASSERT_TRUE(WaitUntil(
          [&] {
            grpc::ClientContext ctx;
            ctx.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(5));
            etcdserverpb::HashKVRequest req;
            req.set_revision(rev);
            st = stub->HashKV(&ctx, req, &resp);
            return st.ok();
          },
          absl::Seconds(30)))
          << "member " << i << ": " << st.error_message();
      EXPECT_EQ(resp.hash_revision(), rev);
      hashes.insert(resp.hash());
    }
    EXPECT_EQ(hashes.size(), 1u) << "members diverged at revision " << rev;
  }

  // Each test its own data directories.
  LocalCluster cluster_{
      3, ::testing::UnitTest::GetInstance()->current_test_info()->name()};
  int leader_ = -1;
  int follower_ = -1;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::map<std::string, std::string> acked_;
  int next_ = 0;
};

TEST_F(SnapshotCatchupTest, StoppedFollower_CatchesUpThroughSnapshot) {
  Write(10);
  Subprocess& f = cluster_.process(follower_);
  Subprocess& l = cluster_.process(leader_);
  f.Signal(SIGSTOP);
  // Far past the retention (50 + 20 entries) of the leader's log.
  Write(300);
  ASSERT_GE(Count(l.output(), "took a raft snapshot"), 2) << l.output();
  EXPECT_EQ(Count(f.output(), "installed a snapshot"), 0);
  f.Signal(SIGCONT);
  ASSERT_TRUE(f.WaitForOutput("installed a snapshot", absl::Seconds(60)))
      << f.output();
  EXPECT_NE(f.output().find("replaced the key-value store from a snapshot"),
            std::string::npos);
  EXPECT_NE(l.output().find("sent a snapshot at index"), std::string::npos);
  Write(10);  // and it follows the log again afterwards
  ExpectConsistent();

  // A clean restart reopens the installed store and the compacted log.
  ASSERT_EQ(cluster_.StopMember(follower_), 0);
  ASSERT_TRUE(cluster_.StartMember(follower_, kFlags).ok());
  Write(5);
  ExpectConsistent();
}

TEST_F(SnapshotCatchupTest,
       FollowerKilledRightAfterInstall_ComesBackConsistent) {
  Write(10);
  // kill -9 as soon as the new store is in place: possibly before the raft
  // log recorded the snapshot (the crash window the install order covers).
  auto kill_after_install = [&](Subprocess& f) {
    ASSERT_TRUE(WaitUntil(
        [&] {
          return f.output().find(
                     "replaced the key-value store from a snapshot") !=
                 std::string::npos;
        },
        absl::Seconds(60)))
        << f.output();
    f.Signal(SIGKILL);
    ASSERT_TRUE(f.Wait(absl::Seconds(10)).ok());
  };

  // Round 1: a paused follower. Enough writes that they overflow what the
  // leader may have in flight to it (those would reach it from socket
  // buffers on resume, without a snapshot).
  Subprocess& paused = cluster_.process(follower_);
  paused.Signal(SIGSTOP);
  Write(400);
  paused.Signal(SIGCONT);
  kill_after_install(paused);
  Write(10);
  ASSERT_TRUE(cluster_.StartMember(follower_, kFlags).ok());
  Write(5);
  ExpectConsistent();

  // Round 2: a follower that was down restarts far behind the log.
  Subprocess& down = cluster_.process(follower_);
  down.Signal(SIGKILL);
  ASSERT_TRUE(down.Wait(absl::Seconds(10)).ok());
  Write(200);
  ASSERT_TRUE(cluster_.StartMember(follower_, kFlags).ok());
  kill_after_install(cluster_.process(follower_));
  Write(10);
  ASSERT_TRUE(cluster_.StartMember(follower_, kFlags).ok());
  Write(5);
  ExpectConsistent();

  // Round 3: the crash lands exactly between the two steps of the install
  // (store replaced, raft log not yet): the member exits there on purpose.
  Subprocess& again = cluster_.process(follower_);
  again.Signal(SIGKILL);
  ASSERT_TRUE(again.Wait(absl::Seconds(10)).ok());
  Write(200);
  setenv("LOCKD_TESTING_EXIT_AFTER_STORE_RESTORE", "1", 1);
  // It may exit before or after it reports ready.
  (void)cluster_.StartMember(follower_, kFlags);
  unsetenv("LOCKD_TESTING_EXIT_AFTER_STORE_RESTORE");
  Subprocess& crashed = cluster_.process(follower_);
  absl::StatusOr<int> code = crashed.Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << crashed.output();
  EXPECT_EQ(*code, 3);
  ASSERT_NE(crashed.output().find("exiting right after the store restore"),
            std::string::npos)
      << crashed.output();
  Write(10);
  ASSERT_TRUE(cluster_.StartMember(follower_, kFlags).ok());
  Write(5);
  ExpectConsistent();
}

}  // namespace
}  // namespace lockd::testing
