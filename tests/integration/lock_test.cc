// Locks and elections on a real 3-member lockd cluster through the etcd v3
// Lock and Election gRPC services (v3lockpb / v3electionpb stubs): mutual
// exclusion among many contending clients spread over all members, strictly
// increasing fencing tokens, no grant to a waiter whose lease expired or was
// revoked while it waited, a held lock and its queue surviving a leader
// kill -9, and campaign/proclaim/leader/observe/resign through leader and
// followers.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "lockdpb/lockd.grpc.pb.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"
#include "v3electionpb/v3election.grpc.pb.h"
#include "v3lockpb/v3lock.grpc.pb.h"

namespace lockd::testing {
namespace {

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

// Stubs for one member.
struct Member {
  explicit Member(const std::string& endpoint)
      : channel(
            grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials())),
        kv(etcdserverpb::KV::NewStub(channel)),
        lease(etcdserverpb::Lease::NewStub(channel)),
        lock(v3lockpb::Lock::NewStub(channel)),
        election(v3electionpb::Election::NewStub(channel)) {}

  int64_t Grant(int64_t ttl_s) {
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(ttl_s);
    etcdserverpb::LeaseGrantResponse resp;
    grpc::Status st =
        lease->LeaseGrant(Ctx(absl::Seconds(10)).get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.id();
  }
  void Revoke(int64_t id) {
    etcdserverpb::LeaseRevokeRequest req;
    req.set_id(id);
    etcdserverpb::LeaseRevokeResponse resp;
    grpc::Status st =
        lease->LeaseRevoke(Ctx(absl::Seconds(10)).get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  grpc::Status Lock(const std::string& name, int64_t lease_id,
                    absl::Duration timeout, v3lockpb::LockResponse* resp) {
    v3lockpb::LockRequest req;
    req.set_name(name);
    req.set_lease(lease_id);
    return lock->Lock(Ctx(timeout).get(), req, resp);
  }
  grpc::Status Unlock(const std::string& key) {
    v3lockpb::UnlockRequest req;
    req.set_key(key);
    v3lockpb::UnlockResponse resp;
    return lock->Unlock(Ctx(absl::Seconds(10)).get(), req, &resp);
  }
  // The key's create revision (0 if absent), read linearizably; retried
  // for up to `patience` while the cluster has no leader.
  int64_t CreateRevision(const std::string& key,
                         absl::Duration patience = absl::ZeroDuration()) {
    etcdserverpb::RangeRequest req;
    req.set_key(key);
    etcdserverpb::RangeResponse resp;
    const absl::Time until = absl::Now() + patience;
    grpc::Status st;
    do {
      st = kv->Range(Ctx(absl::Seconds(10)).get(), req, &resp);
    } while (!st.ok() && absl::Now() < until);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.kvs_size() == 0 ? 0 : resp.kvs(0).create_revision();
  }
  int64_t CountPrefix(const std::string& prefix) {
    etcdserverpb::RangeRequest req;
    req.set_key(prefix);
    std::string end = prefix;
    end.back()++;
    req.set_range_end(end);
    req.set_count_only(true);
    etcdserverpb::RangeResponse resp;
    grpc::Status st = kv->Range(Ctx(absl::Seconds(10)).get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.count();
  }

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  std::unique_ptr<v3lockpb::Lock::Stub> lock;
  std::unique_ptr<v3electionpb::Election::Stub> election;
};

class LockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<LocalCluster>(3, "lock");
    ASSERT_TRUE(cluster_->StartAll().ok());
    leader_id_ = cluster_->WaitForLeader(absl::Seconds(30));
    ASSERT_NE(leader_id_, 0u);
    leader_ = cluster_->MemberIndexOf(leader_id_);
    ASSERT_GE(leader_, 0);
    for (int i = 0; i < 3; ++i) {
      members_.push_back(
          std::make_unique<Member>(cluster_->member(i).endpoint()));
    }
  }
  // The i-th follower (0 or 1).
  int Follower(int i) const {
    int seen = 0;
    for (int m = 0; m < 3; ++m) {
      if (m != leader_ && seen++ == i) return m;
    }
    return -1;
  }
  Member& M(int i) { return *members_[i]; }

  std::unique_ptr<LocalCluster> cluster_;
  uint64_t leader_id_ = 0;
  int leader_ = -1;
  std::vector<std::unique_ptr<Member>> members_;
};

TEST_F(LockTest, MutualExclusionAndIncreasingFencingTokens) {
  constexpr int kClients = 12;
  constexpr int kRounds = 15;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  absl::Mutex mu;
  std::vector<int64_t> tokens;  // in grant order (grants are serialized)
  std::vector<std::thread> clients;
  std::atomic<int> failures{0};
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      Member& m = M(c % 3);  // leader and followers alike
      const int64_t lease = m.Grant(60);
      for (int r = 0; r < kRounds; ++r) {
        v3lockpb::LockResponse resp;
        grpc::Status st = m.Lock("mx", lease, absl::Seconds(60), &resp);
        if (!st.ok()) {
          ADD_FAILURE() << st.error_message();
          ++failures;
          return;
        }
        if (inside.fetch_add(1) != 0) ++overlaps;
        // The work under the lock: read the fencing token (the key's create
        // revision), which also gives other clients time to misbehave.
        const int64_t token = m.CreateRevision(resp.key());
        {
          absl::MutexLock lock(&mu);
          tokens.push_back(token);
        }
        inside.fetch_sub(1);
        st = m.Unlock(resp.key());
        EXPECT_TRUE(st.ok()) << st.error_message();
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(overlaps.load(), 0);
  ASSERT_EQ(tokens.size(), size_t{kClients * kRounds});
  for (size_t i = 1; i < tokens.size(); ++i) {
    EXPECT_LT(tokens[i - 1], tokens[i]) << "grant " << i;
  }
  EXPECT_EQ(M(0).CountPrefix("mx/"), 0);
}

TEST_F(LockTest, WaiterWhoseLeaseEndsIsNeverGranted) {
  Member& holder = M(leader_);
  const int64_t held = holder.Grant(60);
  v3lockpb::LockResponse h;
  ASSERT_TRUE(holder.Lock("exp", held, absl::Seconds(10), &h).ok());

  // B: a short lease nobody keeps alive, waiting on a follower.
  // C: a lease revoked while it waits, on the other follower.
  Member& fb = M(Follower(0));
  Member& fc = M(Follower(1));
  const int64_t lb = fb.Grant(2);
  const int64_t lc = fc.Grant(60);
  grpc::Status sb, sc;
  absl::Time b_done;
  std::thread tb([&] {
    v3lockpb::LockResponse r;
    sb = fb.Lock("exp", lb, absl::Seconds(30), &r);
    b_done = absl::Now();
  });
  std::thread tc([&] {
    v3lockpb::LockResponse r;
    sc = fc.Lock("exp", lc, absl::Seconds(30), &r);
  });
  // Both are queued (their keys exist) before C's lease goes.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (holder.CountPrefix("exp/") < 3 && absl::Now() < until) {
  }
  ASSERT_EQ(holder.CountPrefix("exp/"), 3);
  const absl::Time start = absl::Now();
  fc.Revoke(lc);
  tc.join();
  tb.join();
  EXPECT_EQ(sc.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(sc.error_message(), "mutex: session is expired");
  EXPECT_EQ(sb.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(sb.error_message(), "mutex: session is expired");
  // B failed when its lease expired, long before its own deadline.
  EXPECT_LT(b_done - start, absl::Seconds(20));
  // The holder still holds; nobody else is queued.
  EXPECT_EQ(holder.CreateRevision(h.key()), h.header().revision());
  EXPECT_EQ(holder.CountPrefix("exp/"), 1);
  ASSERT_TRUE(holder.Unlock(h.key()).ok());
}

TEST_F(LockTest, CancelledWaiterLeavesTheQueue) {
  Member& m = M(Follower(0));
  const int64_t a = m.Grant(60), b = m.Grant(60);
  v3lockpb::LockResponse ra, rb;
  ASSERT_TRUE(m.Lock("cx", a, absl::Seconds(10), &ra).ok());
  grpc::Status st = m.Lock("cx", b, absl::Milliseconds(700), &rb);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // As in etcd, the abandoned waiter's key is deleted.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (m.CountPrefix("cx/") != 1 && absl::Now() < until) {
  }
  EXPECT_EQ(m.CountPrefix("cx/"), 1);
  v3lockpb::LockRequest no_lease;
  no_lease.set_name("cx");
  EXPECT_EQ(
      m.lock->Lock(Ctx(absl::Seconds(5)).get(), no_lease, &rb).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);
  // A lease that does not exist: etcd's error.
  st = m.Lock("cx", 0x1234, absl::Seconds(5), &rb);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), "etcdserver: requested lease not found");
}

TEST_F(LockTest, LockSurvivesLeaderKill) {
  Member& fa = M(Follower(0));
  Member& fb = M(Follower(1));
  const int64_t a = fa.Grant(60), b = fb.Grant(60);
  v3lockpb::LockResponse ra;
  ASSERT_TRUE(fa.Lock("lk", a, absl::Seconds(10), &ra).ok());
  grpc::Status sb;
  v3lockpb::LockResponse rb;
  std::atomic<bool> b_done{false};
  std::thread tb([&] {
    sb = fb.Lock("lk", b, absl::Seconds(60), &rb);
    b_done = true;
  });
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (fa.CountPrefix("lk/") < 2 && absl::Now() < until) {
  }
  ASSERT_EQ(fa.CountPrefix("lk/"), 2);

  cluster_->process(leader_).Signal(SIGKILL);
  ASSERT_TRUE(cluster_->process(leader_).Wait(absl::Seconds(10)).ok());
  ASSERT_NE(cluster_->WaitForLeader(absl::Seconds(30)), 0u);
  // The holder still holds, the waiter still waits.
  EXPECT_EQ(fa.CreateRevision(ra.key(), absl::Seconds(20)),
            ra.header().revision());
  EXPECT_FALSE(b_done.load());
  // Unlock through the new cluster; B gets the lock.
  grpc::Status st;
  until = absl::Now() + absl::Seconds(20);
  while (!(st = fa.Unlock(ra.key())).ok() && absl::Now() < until) {
  }
  ASSERT_TRUE(st.ok()) << st.error_message();
  tb.join();
  ASSERT_TRUE(sb.ok()) << sb.error_message();
  EXPECT_GT(fb.CreateRevision(rb.key()), ra.header().revision());
}

// A Lock sent to a follower whose leader stops (SIGSTOP, as a partition or
// a stalled process would): the follower has the leader propose its queue
// entry in the leader's term, so once it applies the next leader's first
// entry it knows the entry can never apply, and the call is answered
// "etcdserver: leader changed" (not at the 7 s request timeout, as a call
// relayed to the leader as a whole was). The client can lock again at once
// through the same member; when the old leader resumes, the lost entry
// never appears.
TEST_F(LockTest, LeaderPaused_LockThroughFollowerFailsAsLeaderChanged) {
  const int f = Follower(0);
  Member& fa = M(f);
  const int64_t lease = fa.Grant(60);
  // The follower's write stream to the leader is open.
  v3lockpb::LockResponse warm;
  ASSERT_TRUE(fa.Lock("warm", lease, absl::Seconds(10), &warm).ok());
  // Stopped before the Lock is sent: a leader still running when the queue
  // entry arrives may append it, and the next leader then rightly commits it.
  ASSERT_TRUE(cluster_->process(leader_).Pause());
  v3lockpb::LockResponse lost;
  const absl::Time sent = absl::Now();
  grpc::Status st = fa.Lock("pl", lease, absl::Seconds(60), &lost);
  std::printf("the Lock through the follower was answered after %s: %s\n",
              absl::FormatDuration(absl::Now() - sent).c_str(),
              st.error_message().c_str());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: leader changed");
  // Locking again through the same member works under the new leader. On
  // another lease: were the lost entry applied, its key would stay apart
  // (and hold the lock).
  const int64_t lease2 = fa.Grant(60);
  v3lockpb::LockResponse held;
  st = fa.Lock("pl", lease2, absl::Seconds(20), &held);
  ASSERT_TRUE(st.ok()) << st.error_message();
  cluster_->process(leader_).Signal(SIGCONT);
  // Every member, the resumed one included, has one queue entry for "pl":
  // the second Lock's.
  ASSERT_TRUE(fa.Unlock(warm.key()).ok());
  for (int i = 0; i < 3; ++i) {
    etcdserverpb::RangeRequest req;
    req.set_key("pl/");
    req.set_range_end("pl0");
    req.set_serializable(true);
    etcdserverpb::RangeResponse resp;
    const absl::Time until = absl::Now() + absl::Seconds(30);
    // Until the member has applied the unlock of "warm" (after the lost
    // entry's term, if it was ever appended).
    while (true) {
      etcdserverpb::RangeRequest w;
      w.set_key(warm.key());
      w.set_serializable(true);
      etcdserverpb::RangeResponse wr;
      grpc::Status ws = M(i).kv->Range(Ctx(absl::Seconds(5)).get(), w, &wr);
      if (ws.ok() && wr.kvs_size() == 0) break;
      ASSERT_LT(absl::Now(), until) << "member " << i;
      absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_TRUE(M(i).kv->Range(Ctx(absl::Seconds(5)).get(), req, &resp).ok());
    ASSERT_EQ(resp.kvs_size(), 1) << "member " << i;
    EXPECT_EQ(resp.kvs(0).key(), held.key()) << "member " << i;
  }
}

TEST_F(LockTest, ElectionThroughLeaderAndFollowers) {
  Member& l = M(leader_);
  Member& f0 = M(Follower(0));
  Member& f1 = M(Follower(1));
  const int64_t la = f0.Grant(60), lb = f1.Grant(60);

  v3electionpb::LeaderRequest who;
  who.set_name("el");
  v3electionpb::LeaderResponse lr;
  grpc::Status st = l.election->Leader(Ctx(absl::Seconds(5)).get(), who, &lr);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(st.error_message(), "election: no leader");

  // An observer on the leader member before anyone campaigns.
  grpc::ClientContext observe_ctx;
  observe_ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = l.election->Observe(&observe_ctx, who);

  v3electionpb::CampaignRequest ca;
  ca.set_name("el");
  ca.set_lease(la);
  ca.set_value("a1");
  v3electionpb::CampaignResponse ra;
  st = f0.election->Campaign(Ctx(absl::Seconds(10)).get(), ca, &ra);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(ra.leader().name(), "el");
  EXPECT_EQ(ra.leader().lease(), la);
  EXPECT_EQ(ra.leader().key(), absl::StrCat("el/", absl::Hex(la)));

  v3electionpb::LeaderResponse seen;
  ASSERT_TRUE(reader->Read(&seen));
  EXPECT_EQ(seen.kv().value(), "a1");

  // B campaigns on the other follower and waits.
  v3electionpb::CampaignRequest cb = ca;
  cb.set_lease(lb);
  cb.set_value("b1");
  v3electionpb::CampaignResponse rb;
  grpc::Status sb;
  std::thread tb([&] {
    sb = f1.election->Campaign(Ctx(absl::Seconds(60)).get(), cb, &rb);
  });

  v3electionpb::ProclaimRequest pr;
  *pr.mutable_leader() = ra.leader();
  pr.set_value("a2");
  v3electionpb::ProclaimResponse pres;
  st = l.election->Proclaim(Ctx(absl::Seconds(5)).get(), pr, &pres);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(reader->Read(&seen));
  EXPECT_EQ(seen.kv().value(), "a2");
  st = f1.election->Leader(Ctx(absl::Seconds(5)).get(), who, &lr);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(lr.kv().value(), "a2");

  // A stale leader key (wrong rev) cannot proclaim.
  pr.mutable_leader()->set_rev(ra.leader().rev() + 1000);
  st = l.election->Proclaim(Ctx(absl::Seconds(5)).get(), pr, &pres);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(st.error_message(), "election: not leader");
  v3electionpb::ProclaimRequest missing;
  st = l.election->Proclaim(Ctx(absl::Seconds(5)).get(), missing, &pres);
  EXPECT_EQ(st.error_message(), "\"leader\" field must be provided");

  // A resigns; B leads, and the observer sees it.
  v3electionpb::ResignRequest rr;
  *rr.mutable_leader() = ra.leader();
  v3electionpb::ResignResponse rres;
  st = f0.election->Resign(Ctx(absl::Seconds(5)).get(), rr, &rres);
  ASSERT_TRUE(st.ok()) << st.error_message();
  tb.join();
  ASSERT_TRUE(sb.ok()) << sb.error_message();
  EXPECT_GT(rb.leader().rev(), ra.leader().rev());
  ASSERT_TRUE(reader->Read(&seen));
  EXPECT_EQ(seen.kv().value(), "b1");
  EXPECT_EQ(seen.kv().key(), rb.leader().key());
  // Resigning again (no longer leader) is not an error, as in etcd.
  st = f0.election->Resign(Ctx(absl::Seconds(5)).get(), rr, &rres);
  EXPECT_TRUE(st.ok()) << st.error_message();
  observe_ctx.TryCancel();
  while (reader->Read(&seen)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(LockTest, LockctlLockAndElect) {
  const std::string all = cluster_->endpoints();
  const std::string lockctl = Runfile("lockd/lockctl");
  // lock NAME command: the command runs holding the lock, with etcdctl's
  // environment; flags after NAME belong to the command.
  absl::StatusOr<CommandResult> r =
      RunCommand({lockctl, "--endpoints=" + all, "lock", "--ttl=5", "job", "sh",
                  "-c", "echo held $ETCD_LOCK_KEY $ETCD_LOCK_REV; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3) << r->err;
  EXPECT_EQ(r->out.rfind("held job/", 0), 0u) << r->out;
  EXPECT_EQ(M(0).CountPrefix("job/"), 0);  // unlocked afterwards

  // A held lock makes lockctl wait; it runs once the holder unlocks.
  Member& m = M(Follower(0));
  const int64_t lease = m.Grant(60);
  v3lockpb::LockResponse held;
  ASSERT_TRUE(m.Lock("job", lease, absl::Seconds(10), &held).ok());
  Subprocess waiter;
  ASSERT_TRUE(waiter
                  .Start({lockctl, "--endpoints=" + all, "lock", "job", "sh",
                          "-c", "echo got-it"})
                  .ok());
  EXPECT_FALSE(waiter.WaitForOutput("got-it", absl::Seconds(1)));
  ASSERT_TRUE(m.Unlock(held.key()).ok());
  EXPECT_TRUE(waiter.WaitForOutput("got-it", absl::Seconds(20)));
  absl::StatusOr<int> code = waiter.Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << waiter.output();

  // elect NAME proposal leads until SIGINT, then resigns; elect NAME
  // observes.
  Subprocess observer, candidate;
  ASSERT_TRUE(
      observer.Start({lockctl, "--endpoints=" + all, "elect", "svc"}).ok());
  ASSERT_TRUE(
      candidate
          .Start({lockctl, "--endpoints=" + all, "elect", "svc", "primary-1"})
          .ok());
  ASSERT_TRUE(candidate.WaitForOutput("primary-1", absl::Seconds(20)))
      << candidate.output();
  EXPECT_TRUE(observer.WaitForOutput("primary-1", absl::Seconds(20)))
      << observer.output();
  v3electionpb::LeaderRequest who;
  who.set_name("svc");
  v3electionpb::LeaderResponse lr;
  grpc::Status st =
      M(leader_).election->Leader(Ctx(absl::Seconds(5)).get(), who, &lr);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(lr.kv().value(), "primary-1");
  candidate.Signal(SIGINT);
  code = candidate.Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << candidate.output();
  st = M(leader_).election->Leader(Ctx(absl::Seconds(5)).get(), who, &lr);
  EXPECT_EQ(st.error_message(), "election: no leader");
  observer.Signal(SIGINT);
  code = observer.Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << observer.output();
}

// lockd.v1.Locks: try-lock with a wait timeout, shared/exclusive, semaphores,
// holders and waiters, fencing tokens, guarded release.
TEST_F(LockTest, LockdExtension) {
  auto locks = lockd::v1::Locks::NewStub(M(Follower(0)).channel);
  auto locks_leader = lockd::v1::Locks::NewStub(M(leader_).channel);
  Member& m = M(Follower(0));
  const int64_t a = m.Grant(60), b = m.Grant(60), c = m.Grant(60);
  auto try_lock = [&](lockd::v1::Locks::Stub* s, int64_t lease,
                      lockd::v1::LockMode mode, int64_t wait_ms,
                      lockd::v1::TryLockResponse* r) {
    lockd::v1::TryLockRequest req;
    req.set_name("rw");
    req.set_lease(lease);
    req.set_mode(mode);
    req.set_wait_timeout_ms(wait_ms);
    return s->TryLock(Ctx(absl::Seconds(20)).get(), req, r);
  };
  // Two readers share; a writer cannot get in within its timeout.
  lockd::v1::TryLockResponse ra, rb, rc;
  ASSERT_TRUE(try_lock(locks.get(), a, lockd::v1::SHARED, 0, &ra).ok());
  ASSERT_TRUE(ra.acquired());
  ASSERT_TRUE(try_lock(locks_leader.get(), b, lockd::v1::SHARED, 0, &rb).ok());
  ASSERT_TRUE(rb.acquired());
  EXPECT_LT(ra.fencing_token(), rb.fencing_token());
  grpc::Status st = try_lock(locks.get(), c, lockd::v1::EXCLUSIVE, 300, &rc);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(rc.acquired());
  EXPECT_EQ(m.CountPrefix("rw/"), 2);  // the timed-out writer left the queue

  // A queued writer is listed as a waiter and gets in once both readers
  // release; a release with a stale token does nothing.
  lockd::v1::TryLockResponse rw;
  grpc::Status sw;
  std::thread writer(
      [&] { sw = try_lock(locks.get(), c, lockd::v1::EXCLUSIVE, 15000, &rw); });
  lockd::v1::ListHoldersRequest lreq;
  lreq.set_name("rw");
  lockd::v1::ListHoldersResponse list;
  const absl::Time until = absl::Now() + absl::Seconds(10);
  do {
    ASSERT_TRUE(
        locks_leader->ListHolders(Ctx(absl::Seconds(5)).get(), lreq, &list)
            .ok());
  } while (list.waiters_size() == 0 && absl::Now() < until);
  ASSERT_EQ(list.holders_size(), 2);
  ASSERT_EQ(list.waiters_size(), 1);
  EXPECT_EQ(list.waiters(0).mode(), lockd::v1::EXCLUSIVE);
  EXPECT_EQ(list.waiters(0).lease(), c);
  lockd::v1::ReleaseRequest rel;
  lockd::v1::ReleaseResponse relr;
  rel.set_key(ra.key());
  rel.set_fencing_token(ra.fencing_token() + 1);
  ASSERT_TRUE(locks->Release(Ctx(absl::Seconds(5)).get(), rel, &relr).ok());
  EXPECT_FALSE(relr.released());
  rel.set_fencing_token(ra.fencing_token());
  ASSERT_TRUE(locks->Release(Ctx(absl::Seconds(5)).get(), rel, &relr).ok());
  EXPECT_TRUE(relr.released());
  rel.set_key(rb.key());
  rel.set_fencing_token(0);
  ASSERT_TRUE(locks->Release(Ctx(absl::Seconds(5)).get(), rel, &relr).ok());
  EXPECT_TRUE(relr.released());
  writer.join();
  ASSERT_TRUE(sw.ok()) << sw.error_message();
  ASSERT_TRUE(rw.acquired());
  EXPECT_GT(rw.fencing_token(), rb.fencing_token());

  // A semaphore with 2 slots: the third waits, then gets the freed slot.
  auto acquire = [&](int64_t lease, int64_t wait_ms,
                     lockd::v1::AcquireSemaphoreResponse* r) {
    lockd::v1::AcquireSemaphoreRequest req;
    req.set_name("sem");
    req.set_lease(lease);
    req.set_limit(2);
    req.set_wait_timeout_ms(wait_ms);
    return locks->AcquireSemaphore(Ctx(absl::Seconds(20)).get(), req, r);
  };
  lockd::v1::AcquireSemaphoreResponse s1, s2, s3;
  ASSERT_TRUE(acquire(a, 0, &s1).ok() && s1.acquired());
  ASSERT_TRUE(acquire(b, 0, &s2).ok() && s2.acquired());
  ASSERT_TRUE(acquire(c, 0, &s3).ok());
  EXPECT_FALSE(s3.acquired());
  grpc::Status s3st;
  std::thread third([&] { s3st = acquire(c, 15000, &s3); });
  rel.set_key(s1.key());
  do {
    ASSERT_TRUE(locks->Release(Ctx(absl::Seconds(5)).get(), rel, &relr).ok());
  } while (!relr.released());
  third.join();
  ASSERT_TRUE(s3st.ok()) << s3st.error_message();
  EXPECT_TRUE(s3.acquired());
  EXPECT_GT(s3.fencing_token(), s2.fencing_token());
  lreq.set_name("sem");
  ASSERT_TRUE(
      locks->ListHolders(Ctx(absl::Seconds(5)).get(), lreq, &list).ok());
  EXPECT_EQ(list.limit(), 2u);
  EXPECT_EQ(list.holders_size(), 2);
  EXPECT_EQ(list.waiters_size(), 0);
}

}  // namespace
}  // namespace lockd::testing
