// Durability under a continuous write load: several writers keep putting
// through every member while a follower and then the leader are killed with
// SIGKILL and restarted. Afterwards every acknowledged write is present on
// every member, no reader ever saw the revision go backwards, and the members
// agree on HashKV at the same revision.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

// What the writers and the reader saw.
struct Observed {
  absl::Mutex mu;
  // key -> value of every acknowledged put (each key is written once).
  std::map<std::string, std::string> acked ABSL_GUARDED_BY(mu);
  int64_t failed_attempts ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::string> violations ABSL_GUARDED_BY(mu);
};

class Load {
 public:
  Load(const LocalCluster& cluster, int writers) {
    for (int i = 0; i < cluster.size(); ++i) {
      stubs_.push_back(etcdserverpb::KV::NewStub(grpc::CreateChannel(
          cluster.member(i).endpoint(), grpc::InsecureChannelCredentials())));
    }
    for (int w = 0; w < writers; ++w) {
      threads_.emplace_back([this, w] { WriteLoop(w); });
    }
    threads_.emplace_back([this] { ReadLoop(); });
  }
  ~Load() { Stop(); }

  void Stop() {
    stop_.store(true);
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  size_t acked() {
    absl::MutexLock lock(&observed_.mu);
    return observed_.acked.size();
  }
  // Waits until `more` further writes were acknowledged (or the timeout).
  bool WaitForProgress(size_t more, absl::Duration timeout) {
    const size_t target = acked() + more;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (acked() >= target) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }
  Observed& observed() { return observed_; }

 private:
  // gRPC stubs are safe to share between threads.
  etcdserverpb::KV::Stub* Stub(size_t i) {
    return stubs_[i % stubs_.size()].get();
  }

  // Writer w puts w/<n> for n = 0, 1, ... ; a put that fails is retried on
  // the next member (a retry after an unknown outcome may apply twice, which
  // is harmless here: same key, same value). Its acknowledged revisions must
  // strictly increase: each put starts after the previous one was answered.
  void WriteLoop(int w) {
    int64_t last_revision = 0;
    size_t member = w;
    for (int n = 0; !stop_.load(); ++n) {
      etcdserverpb::PutRequest req;
      req.set_key(absl::StrFormat("w%d/%06d", w, n));
      req.set_value(absl::StrFormat("value-%d-%d", w, n));
      while (!stop_.load()) {
        grpc::ClientContext ctx;
        ctx.set_deadline(DeadlineIn(absl::Seconds(3)));
        etcdserverpb::PutResponse resp;
        grpc::Status st = Stub(member)->Put(&ctx, req, &resp);
        absl::MutexLock lock(&observed_.mu);
        if (st.ok()) {
          if (resp.header().revision() <= last_revision) {
            observed_.violations.push_back(absl::StrFormat(
                "writer %d: put acknowledged at revision %d after %d", w,
                resp.header().revision(), last_revision));
          }
          last_revision = resp.header().revision();
          observed_.acked[req.key()] = req.value();
          break;
        }
        ++observed_.failed_attempts;
        ++member;
        observed_.mu.Unlock();
        absl::SleepFor(absl::Milliseconds(50));
        observed_.mu.Lock();
      }
    }
  }

  // Linearizable reads, one after another over every member: the revision in
  // their headers never goes backwards.
  void ReadLoop() {
    int64_t last_revision = 0;
    for (size_t n = 0; !stop_.load(); ++n) {
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(absl::Seconds(3)));
      etcdserverpb::RangeRequest req;
      req.set_key("w0/000000");
      etcdserverpb::RangeResponse resp;
      grpc::Status st = Stub(n)->Range(&ctx, req, &resp);
      if (!st.ok()) {
        absl::SleepFor(absl::Milliseconds(50));
        continue;
      }
      if (resp.header().revision() < last_revision) {
        absl::MutexLock lock(&observed_.mu);
        observed_.violations.push_back(absl::StrFormat(
            "linearizable read on member %d returned revision %d after %d",
            n % stubs_.size(), resp.header().revision(), last_revision));
      }
      last_revision = resp.header().revision();
    }
  }

  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs_;
  std::atomic<bool> stop_{false};
  Observed observed_;
  std::vector<std::thread> threads_;
};

void KillAndRestart(LocalCluster& cluster, int i, Load& load) {
  cluster.process(i).Signal(SIGKILL);
  ASSERT_TRUE(cluster.process(i).Wait(absl::Seconds(10)).ok());
  // The others keep committing while it is down.
  ASSERT_TRUE(load.WaitForProgress(200, absl::Seconds(60)))
      << "no progress with member " << i << " down";
  ASSERT_TRUE(cluster.StartMember(i).ok()) << "member " << i;
  ASSERT_TRUE(load.WaitForProgress(200, absl::Seconds(60)))
      << "no progress after member " << i << " restarted";
}

TEST(DurabilityTest, KillFollowerThenLeaderUnderLoad_NoAcknowledgedWriteLost) {
  LocalCluster cluster(3, "durability");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  Load load(cluster, /*writers=*/6);
  ASSERT_TRUE(load.WaitForProgress(300, absl::Seconds(60)));

  const int leader_index = cluster.MemberIndexOf(leader);
  ASSERT_GE(leader_index, 0);
  const int follower_index = (leader_index + 1) % cluster.size();
  KillAndRestart(cluster, follower_index, load);

  leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  KillAndRestart(cluster, cluster.MemberIndexOf(leader), load);
  load.Stop();

  Observed& seen = load.observed();
  absl::MutexLock lock(&seen.mu);
  for (const std::string& v : seen.violations) ADD_FAILURE() << v;
  ASSERT_GT(seen.acked.size(), 1000u);
  std::printf("acknowledged writes: %zu, failed attempts: %lld\n",
              seen.acked.size(), static_cast<long long>(seen.failed_attempts));

  // Every member, after a linearizable read barrier, holds every
  // acknowledged write with its value; all at one revision agree on HashKV.
  int64_t revision = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    auto channel = grpc::CreateChannel(cluster.member(i).endpoint(),
                                       grpc::InsecureChannelCredentials());
    auto kv = etcdserverpb::KV::NewStub(channel);
    std::map<std::string, std::string> stored;
    std::string from = "w";
    for (bool more = true; more;) {
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(absl::Seconds(10)));
      etcdserverpb::RangeRequest req;
      req.set_key(from);
      req.set_range_end("x");
      req.set_limit(5000);
      etcdserverpb::RangeResponse resp;
      grpc::Status st = kv->Range(&ctx, req, &resp);
      ASSERT_TRUE(st.ok()) << "member " << i << ": " << st.error_message();
      for (const auto& k : resp.kvs()) stored[k.key()] = k.value();
      more = resp.more();
      if (more) from = resp.kvs().rbegin()->key() + std::string(1, '\0');
      if (i == 0 && revision == 0) revision = resp.header().revision();
    }
    size_t missing = 0;
    for (const auto& [key, value] : seen.acked) {
      auto it = stored.find(key);
      if (it == stored.end() || it->second != value) {
        if (++missing <= 5) ADD_FAILURE() << "member " << i << " lost " << key;
      }
    }
    EXPECT_EQ(missing, 0u) << "member " << i;
  }

  std::set<uint32_t> hashes;
  for (int i = 0; i < cluster.size(); ++i) {
    auto m = etcdserverpb::Maintenance::NewStub(grpc::CreateChannel(
        cluster.member(i).endpoint(), grpc::InsecureChannelCredentials()));
    etcdserverpb::HashKVResponse resp;
    grpc::Status st;
    // A member still applying answers "future revision" for a moment.
    for (int attempt = 0; attempt < 100; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(absl::Seconds(5)));
      etcdserverpb::HashKVRequest req;
      req.set_revision(revision);
      st = m->HashKV(&ctx, req, &resp);
      if (st.ok()) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_TRUE(st.ok()) << "member " << i << ": " << st.error_message();
    hashes.insert(resp.hash());
  }
  EXPECT_EQ(hashes.size(), 1u) << "members diverged at revision " << revision;
}

}  // namespace
}  // namespace lockd::testing
