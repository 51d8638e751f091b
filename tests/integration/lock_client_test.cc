// Locks and elections from the client side, on a real 3-member lockd
// cluster: lockd's client helpers (Lock/Unlock with fencing tokens, the
// guarded write, Campaign/Proclaim/Leader/Resign), Debian's etcdctl `lock`
// and `elect` (client-side recipes on KV/Lease/Watch), and require-leader
// for keep-alive and Observe streams (a member cut off from the cluster
// ends them with "etcdserver: no leader").
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "lockd/client/client.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"
#include "v3electionpb/v3election.grpc.pb.h"

namespace lockd::testing {
namespace {

using client::Client;
using client::ClientOptions;
using client::HeldLock;

class LockClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<LocalCluster>(3, "lockclient");
    ASSERT_TRUE(cluster_->StartAll().ok());
    const uint64_t leader_id = cluster_->WaitForLeader(absl::Seconds(30));
    ASSERT_NE(leader_id, 0u);
    leader_ = cluster_->MemberIndexOf(leader_id);
    ASSERT_GE(leader_, 0);
  }

  std::unique_ptr<Client> NewClient(std::vector<std::string> endpoints = {}) {
    ClientOptions options;
    if (endpoints.empty()) {
      for (int i = 0; i < 3; ++i) {
        endpoints.push_back(cluster_->member(i).endpoint());
      }
    }
    options.endpoints = endpoints;
    options.call_timeout = absl::Seconds(10);
    auto c = Client::Create(options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  int64_t Grant(Client& c, int64_t ttl_s) {
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(ttl_s);
    auto resp = c.LeaseGrant(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? resp->id() : 0;
  }

  void Revoke(Client& c, int64_t lease) {
    etcdserverpb::LeaseRevokeRequest req;
    req.set_id(lease);
    auto resp = c.LeaseRevoke(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
  }

  // Keys under `prefix` (linearizable read).
  int64_t CountPrefix(Client& c, const std::string& prefix) {
    etcdserverpb::RangeRequest req;
    req.set_key(prefix);
    std::string end = prefix;
    end.back()++;
    req.set_range_end(end);
    req.set_count_only(true);
    auto resp = c.Range(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? resp->count() : -1;
  }

  std::string Get(Client& c, const std::string& key) {
    etcdserverpb::RangeRequest req;
    req.set_key(key);
    auto resp = c.Range(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() && resp->kvs_size() > 0 ? resp->kvs(0).value() : "";
  }

  // Polls `cond` until true or `timeout`.
  template <typename Cond>
  static bool Eventually(Cond cond, absl::Duration timeout) {
    const absl::Time until = absl::Now() + timeout;
    while (absl::Now() < until) {
      if (cond()) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return cond();
  }

  std::unique_ptr<LocalCluster> cluster_;
  int leader_ = -1;
};

etcdserverpb::TxnRequest PutTxn(const std::string& key,
                                const std::string& value) {
  etcdserverpb::TxnRequest txn;
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  return txn;
}

TEST_F(LockClientTest, LockTokensAndGuardedWrite) {
  auto a = NewClient();
  auto b = NewClient({cluster_->member((leader_ + 1) % 3).endpoint()});
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const int64_t la = Grant(*a, 30);
  const int64_t lb = Grant(*b, 30);

  absl::StatusOr<HeldLock> ha = a->Lock("res", la, absl::Seconds(10));
  ASSERT_TRUE(ha.ok()) << ha.status();
  EXPECT_EQ(ha->name, "res");
  EXPECT_GT(ha->token, 0);
  EXPECT_GE(ha->granted_revision, ha->token);
  // The guarded write applies while the lock is held.
  absl::StatusOr<etcdserverpb::TxnResponse> w =
      a->GuardedTxn(*ha, PutTxn("res-data", "from-a"));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(w->succeeded());
  EXPECT_GT(w->header().revision(), ha->token);
  EXPECT_EQ(Get(*a, "res-data"), "from-a");
  // The caller's own compares still decide between its success and
  // failure ops.
  etcdserverpb::TxnRequest cas = PutTxn("res-data", "never");
  etcdserverpb::Compare* cmp = cas.add_compare();
  cmp->set_key("res-data");
  cmp->set_target(etcdserverpb::Compare::VALUE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_value("something else");
  cas.add_failure()->mutable_request_range()->set_key("res-data");
  w = a->GuardedTxn(*ha, cas);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE(w->succeeded());
  ASSERT_EQ(w->responses_size(), 1);
  EXPECT_EQ(w->responses(0).response_range().kvs(0).value(), "from-a");

  // b waits (through a follower) while a holds.
  absl::StatusOr<HeldLock> hb;
  std::thread waiter([&] { hb = b->Lock("res", lb, absl::Seconds(30)); });
  ASSERT_TRUE(Eventually([&] { return CountPrefix(*a, "res/") == 2; },
                         absl::Seconds(10)));
  // a's lease ends: the lock passes to b, and a's guarded writes are
  // refused from then on, nested failure ops included.
  Revoke(*a, la);
  waiter.join();
  ASSERT_TRUE(hb.ok()) << hb.status();
  EXPECT_GT(hb->token, ha->token);
  EXPECT_GE(hb->granted_revision, hb->token);
  etcdserverpb::TxnRequest stale = PutTxn("res-data", "stale-from-a");
  stale.add_failure()->mutable_request_put()->set_key("res-fail-op");
  w = a->GuardedTxn(*ha, stale);
  EXPECT_TRUE(absl::IsFailedPrecondition(w.status())) << w.status();
  EXPECT_NE(w.status().message().find("lock lost"), std::string::npos);
  EXPECT_EQ(Get(*a, "res-data"), "from-a");
  EXPECT_EQ(CountPrefix(*a, "res-fail-op"), 0);
  w = b->GuardedTxn(*hb, PutTxn("res-data", "from-b"));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(Get(*a, "res-data"), "from-b");
  // a's Unlock of its old token leaves b's key alone.
  EXPECT_TRUE(a->Unlock(*ha).ok());
  EXPECT_EQ(CountPrefix(*a, "res/"), 1);

  // Unlock, then lock again with the same lease: a new, larger token, and
  // the old handle is stale.
  ASSERT_TRUE(b->Unlock(*hb).ok());
  EXPECT_EQ(CountPrefix(*a, "res/"), 0);
  absl::StatusOr<HeldLock> hb2 = b->Lock("res", lb, absl::Seconds(10));
  ASSERT_TRUE(hb2.ok()) << hb2.status();
  EXPECT_GT(hb2->token, hb->token);
  EXPECT_EQ(hb2->key, hb->key);
  w = b->GuardedTxn(*hb, PutTxn("res-data", "old-handle"));
  EXPECT_TRUE(absl::IsFailedPrecondition(w.status())) << w.status();
  EXPECT_TRUE(b->GuardedTxn(*hb2, PutTxn("res-data", "new")).ok());

  // A waiter whose lease ends is told so and never granted.
  const int64_t lc = Grant(*a, 30);
  absl::StatusOr<HeldLock> hc;
  std::thread expired([&] { hc = a->Lock("res", lc, absl::Seconds(30)); });
  ASSERT_TRUE(Eventually([&] { return CountPrefix(*a, "res/") == 2; },
                         absl::Seconds(10)));
  Revoke(*a, lc);
  expired.join();
  EXPECT_FALSE(hc.ok());
  EXPECT_EQ(hc.status().message(), "mutex: session is expired");
  // A wait that times out leaves the queue.
  const int64_t ld = Grant(*a, 30);
  absl::StatusOr<HeldLock> hd = a->Lock("res", ld, absl::Seconds(1));
  EXPECT_TRUE(absl::IsDeadlineExceeded(hd.status())) << hd.status();
  EXPECT_TRUE(Eventually([&] { return CountPrefix(*a, "res/") == 1; },
                         absl::Seconds(10)));
  EXPECT_TRUE(
      absl::IsInvalidArgument(a->Lock("res", 0, absl::Seconds(1)).status()));
}

TEST_F(LockClientTest, ElectionHelpers) {
  auto a = NewClient();
  auto b = NewClient();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  absl::StatusOr<mvccpb::KeyValue> none = a->Leader("svc");
  EXPECT_EQ(none.status().message(), "election: no leader");

  const int64_t la = Grant(*a, 30);
  const int64_t lb = Grant(*b, 30);
  absl::StatusOr<v3electionpb::LeaderKey> ka =
      a->Campaign("svc", la, "a-1", absl::Seconds(10));
  ASSERT_TRUE(ka.ok()) << ka.status();
  EXPECT_EQ(ka->name(), "svc");
  EXPECT_EQ(ka->lease(), la);
  absl::StatusOr<mvccpb::KeyValue> now = b->Leader("svc");
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(now->value(), "a-1");
  EXPECT_EQ(now->create_revision(), ka->rev());
  ASSERT_TRUE(a->Proclaim(*ka, "a-2").ok());
  now = b->Leader("svc");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->value(), "a-2");
  // The leader's guarded write, fenced by its key's create revision.
  EXPECT_TRUE(a->GuardedTxn(ka->key(), ka->rev(), PutTxn("svc-cfg", "a")).ok());

  absl::StatusOr<v3electionpb::LeaderKey> kb;
  std::thread candidate(
      [&] { kb = b->Campaign("svc", lb, "b-1", absl::Seconds(30)); });
  ASSERT_TRUE(Eventually([&] { return CountPrefix(*a, "svc/") == 2; },
                         absl::Seconds(10)));
  ASSERT_TRUE(a->Resign(*ka).ok());
  candidate.join();
  ASSERT_TRUE(kb.ok()) << kb.status();
  EXPECT_GT(kb->rev(), ka->rev());
  now = a->Leader("svc");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->value(), "b-1");
  // The old leader can neither proclaim nor write.
  absl::Status st = a->Proclaim(*ka, "a-3");
  EXPECT_EQ(st.message(), "election: not leader");
  EXPECT_TRUE(absl::IsFailedPrecondition(
      a->GuardedTxn(ka->key(), ka->rev(), PutTxn("svc-cfg", "a-late"))
          .status()));
  EXPECT_EQ(Get(*a, "svc-cfg"), "a");
  // Resigning twice is harmless.
  EXPECT_TRUE(a->Resign(*ka).ok());
  ASSERT_TRUE(b->Resign(*kb).ok());
  EXPECT_EQ(b->Leader("svc").status().message(), "election: no leader");
}

// Require-leader: streams on a member that loses its leader end with
// "etcdserver: no leader" long before any client deadline would.
// `member` is the leader (its keep-alive stream is served there) or a
// follower (the stream is relayed to the leader, which goes away too: the
// relay then ends it with "leader changed" or "no leader").
void CutOffMemberEndsStreams(LocalCluster& cluster, int member, bool leader) {
  const std::string endpoint = cluster.member(member).endpoint();
  auto channel =
      grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
  auto lease = etcdserverpb::Lease::NewStub(channel);
  auto election = v3electionpb::Election::NewStub(channel);
  client::ClientOptions options;
  options.endpoints = {endpoint};
  options.auto_sync_interval = absl::ZeroDuration();
  auto c = Client::Create(options);
  ASSERT_TRUE(c.ok()) << c.status();
  etcdserverpb::LeaseGrantRequest grant;
  grant.set_ttl(120);
  auto granted = (*c)->LeaseGrant(grant);
  ASSERT_TRUE(granted.ok()) << granted.status();
  const int64_t lease_id = granted->id();
  ASSERT_TRUE((*c)->Campaign("rl", lease_id, "v", absl::Seconds(10)).ok());

  // The test's own deadline: far beyond three election timeouts.
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  grpc::ClientContext ka_ctx;
  ka_ctx.set_deadline(absl::ToChronoTime(deadline));
  auto ka = lease->LeaseKeepAlive(&ka_ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  req.set_id(lease_id);
  etcdserverpb::LeaseKeepAliveResponse resp;
  ASSERT_TRUE(ka->Write(req));
  ASSERT_TRUE(ka->Read(&resp));
  EXPECT_GT(resp.ttl(), 0);

  grpc::ClientContext ob_ctx;
  ob_ctx.set_deadline(absl::ToChronoTime(deadline));
  v3electionpb::LeaderRequest who;
  who.set_name("rl");
  auto observer = election->Observe(&ob_ctx, who);
  v3electionpb::LeaderResponse seen;
  ASSERT_TRUE(observer->Read(&seen));
  EXPECT_EQ(seen.kv().value(), "v");

  // The member loses its quorum; it steps down (check-quorum) and, three
  // election timeouts later, ends both streams. The keep-alive stream is
  // idle (the next request would come a third of the TTL later).
  for (int i = 0; i < 3; ++i) {
    if (i != member) cluster.StopMember(i);
  }
  while (ka->Read(&resp)) {
  }
  grpc::Status st = ka->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  if (leader) {
    EXPECT_EQ(st.error_message(), "etcdserver: no leader");
  } else {
    EXPECT_TRUE(st.error_message() == "etcdserver: no leader" ||
                st.error_message() == "etcdserver: leader changed")
        << st.error_message();
  }
  while (observer->Read(&seen)) {
  }
  st = observer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: no leader");
  EXPECT_LT(absl::Now(), deadline);

  // A stream opened on the cut-off member now ends the same way.
  grpc::ClientContext late_ctx;
  late_ctx.set_deadline(absl::ToChronoTime(deadline));
  auto late = lease->LeaseKeepAlive(&late_ctx);
  late->Write(req);
  while (late->Read(&resp)) {
  }
  st = late->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: no leader");
}

TEST_F(LockClientTest, StreamsEndWithNoLeaderOnACutOffLeader) {
  CutOffMemberEndsStreams(*cluster_, leader_, true);
}

TEST_F(LockClientTest, StreamsEndWithNoLeaderOnACutOffFollower) {
  CutOffMemberEndsStreams(*cluster_, (leader_ + 1) % 3, false);
}

// Debian's etcdctl: `lock NAME command` runs the command holding the lock,
// and a second contender waits for the first; `elect` campaigns and
// `elect -l` observes.
TEST_F(LockClientTest, EtcdctlLockAndElect) {
  const std::string all = cluster_->endpoints();
  const std::string dir = TempDir("etcdctl-lock");
  const std::string log = dir + "/log";
  const std::vector<std::string> env = {"ETCDCTL_API=3"};
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  // Each holder records its key and revision, checks nobody else holds
  // (mkdir is atomic), and holds until told to go.
  auto holder = [&](const std::string& who) -> std::vector<std::string> {
    const std::string script = absl::StrCat(
        "mkdir '", dir, "/held' || exit 3\necho \"", who,
        " $ETCD_LOCK_KEY $ETCD_LOCK_REV\" >> '", log, "'\nwhile [ ! -e '", dir,
        "/release-", who, "' ]; do sleep 0.05; done\nrmdir '", dir,
        "/held'\necho \"", who, " done\" >> '", log, "'\n");
    // A script file: etcdctl would take "sh -c" for its own flag.
    const std::string path = absl::StrCat(dir, "/", who, ".sh");
    std::FILE* f = std::fopen(path.c_str(), "w");
    EXPECT_NE(f, nullptr);
    if (f != nullptr) {
      std::fputs(script.c_str(), f);
      std::fclose(f);
    }
    return {
        "/usr/bin/etcdctl", "--endpoints=" + all, "lock", "job", "sh", path};
  };
  Subprocess first, second;
  ASSERT_TRUE(first.Start(holder("first"), env).ok());
  ASSERT_TRUE(Eventually([&] { return CountPrefix(*c, "job/") == 1; },
                         absl::Seconds(20)))
      << first.output();
  ASSERT_TRUE(second.Start(holder("second"), env).ok());
  // Both are queued; only the first runs its command.
  ASSERT_TRUE(Eventually([&] { return CountPrefix(*c, "job/") == 2; },
                         absl::Seconds(20)))
      << second.output();
  ASSERT_TRUE(RunCommand({"/usr/bin/touch", dir + "/release-first"}).ok());
  absl::StatusOr<int> rc = first.Wait(absl::Seconds(30));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(*rc, 0) << first.output();
  ASSERT_TRUE(RunCommand({"/usr/bin/touch", dir + "/release-second"}).ok());
  rc = second.Wait(absl::Seconds(30));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(*rc, 0) << second.output();
  EXPECT_EQ(CountPrefix(*c, "job/"), 0);
  absl::StatusOr<CommandResult> cat = RunCommand({"/bin/cat", log});
  ASSERT_TRUE(cat.ok());
  std::vector<std::string> lines =
      absl::StrSplit(cat->out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << cat->out;
  std::vector<std::string> f = absl::StrSplit(lines[0], ' ');
  std::vector<std::string> s = absl::StrSplit(lines[2], ' ');
  ASSERT_EQ(f.size(), 3u);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(f[0], "first");
  EXPECT_EQ(lines[1], "first done");
  EXPECT_EQ(s[0], "second");
  EXPECT_EQ(lines[3], "second done");
  EXPECT_EQ(f[1].rfind("job/", 0), 0u);
  EXPECT_NE(f[1], s[1]);
  int64_t rev_first = 0, rev_second = 0;
  ASSERT_TRUE(absl::SimpleAtoi(f[2], &rev_first));
  ASSERT_TRUE(absl::SimpleAtoi(s[2], &rev_second));
  EXPECT_LT(rev_first, rev_second);

  // etcdctl lock without a command prints the key and holds until SIGINT;
  // lockd's client waits meanwhile.
  Subprocess bare;
  ASSERT_TRUE(
      bare.Start({"/usr/bin/etcdctl", "--endpoints=" + all, "lock", "bare"},
                 env)
          .ok());
  ASSERT_TRUE(bare.WaitForOutput("bare/", absl::Seconds(20))) << bare.output();
  const int64_t lease = Grant(*c, 30);
  absl::StatusOr<HeldLock> mine;
  std::thread waiter([&] { mine = c->Lock("bare", lease, absl::Seconds(30)); });
  ASSERT_TRUE(Eventually([&] { return CountPrefix(*c, "bare/") == 2; },
                         absl::Seconds(10)));
  bare.Signal(SIGINT);
  waiter.join();
  ASSERT_TRUE(mine.ok()) << mine.status();
  rc = bare.Wait(absl::Seconds(20));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(*rc, 0) << bare.output();
  ASSERT_TRUE(c->Unlock(*mine).ok());

  // elect: an observer, a leader, a second candidate who takes over when
  // the leader resigns (SIGINT).
  Subprocess observer, lead, next;
  ASSERT_TRUE(observer
                  .Start({"/usr/bin/etcdctl", "--endpoints=" + all, "elect",
                          "-l", "svc"},
                         env)
                  .ok());
  ASSERT_TRUE(lead.Start({"/usr/bin/etcdctl", "--endpoints=" + all, "elect",
                          "svc", "proposal-1"},
                         env)
                  .ok());
  ASSERT_TRUE(lead.WaitForOutput("proposal-1", absl::Seconds(20)))
      << lead.output();
  ASSERT_TRUE(observer.WaitForOutput("proposal-1", absl::Seconds(20)))
      << observer.output();
  absl::StatusOr<mvccpb::KeyValue> now = c->Leader("svc");
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(now->value(), "proposal-1");
  ASSERT_TRUE(next.Start({"/usr/bin/etcdctl", "--endpoints=" + all, "elect",
                          "svc", "proposal-2"},
                         env)
                  .ok());
  ASSERT_TRUE(Eventually([&] { return CountPrefix(*c, "svc/") == 2; },
                         absl::Seconds(20)));
  EXPECT_EQ(next.output().find("proposal-2"), std::string::npos);
  lead.Signal(SIGINT);
  rc = lead.Wait(absl::Seconds(20));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(*rc, 0) << lead.output();
  ASSERT_TRUE(next.WaitForOutput("proposal-2", absl::Seconds(20)))
      << next.output();
  ASSERT_TRUE(observer.WaitForOutput("proposal-2", absl::Seconds(20)))
      << observer.output();
  now = c->Leader("svc");
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(now->value(), "proposal-2");
  next.Signal(SIGINT);
  rc = next.Wait(absl::Seconds(20));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(*rc, 0) << next.output();
  EXPECT_EQ(c->Leader("svc").status().message(), "election: no leader");
  observer.Signal(SIGINT);
  rc = observer.Wait(absl::Seconds(20));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(*rc, 0) << observer.output();
}

}  // namespace
}  // namespace lockd::testing
