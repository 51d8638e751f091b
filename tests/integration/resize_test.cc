// `lockctl cluster resize` on a real cluster under a live workload: 3 -> 5
// (the new members started with --initial-cluster-state=existing while the
// resize runs) and 5 -> 3, removing the member the clients were pinned to and
// the leader. Two clients run throughout: lockd's client given ONLY the first
// member's endpoint (it must learn the cluster from MemberList), and Debian's
// etcdctl with a static list of the first three endpoints (it relies on the
// removed members' proxies). No call may fail and no acknowledged write may
// be lost; the longest call is reported, not asserted.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lockd/client/client.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"
#include "tests/harness/workload.h"

namespace lockd::testing {
namespace {

absl::StatusOr<CommandResult> Resize(const std::string& endpoint,
                                     const std::string& members) {
  absl::StatusOr<CommandResult> r = RunCommand(
      {Runfile("lockd/lockctl"), "--endpoints=" + endpoint, "cluster", "resize",
       "--members=" + members, "--wait-timeout=60s"},
      absl::Seconds(90));
  if (r.ok()) {
    std::printf("--- lockctl cluster resize --members=%s (exit %d)\n%s%s",
                members.c_str(), r->exit_code, r->out.c_str(), r->err.c_str());
  }
  return r;
}

TEST(ResizeTest, ThreeToFiveToThree_UnderLoad_NoClientCallFails) {
  LocalCluster cluster(3, "resize");
  ASSERT_TRUE(cluster.StartAll().ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  // The members publish their client URLs soon after they start; the
  // resize below waits for that itself, but the interrupted first run is
  // meant to stop at m4.
  for (absl::Time until = absl::Now() + absl::Seconds(20);
       absl::Now() < until;) {
    absl::StatusOr<CommandResult> l =
        RunEtcdctl(cluster.member(0).endpoint(), {"member", "list"});
    bool all = l.ok() && l->exit_code == 0;
    for (int i = 0; all && i < 3; ++i) {
      all = l->out.find(cluster.member(i).client_url()) != std::string::npos;
    }
    if (all) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  const std::string first_three = cluster.endpoints();
  const std::string pinned = cluster.member(0).endpoint();

  client::ClientOptions o;
  o.endpoints = {pinned};
  o.call_timeout = absl::Seconds(10);
  // Short, so the test sees the sync happen; the default is 30s.
  o.auto_sync_interval = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<client::Client>> c = client::Client::Create(o);
  ASSERT_TRUE(c.ok()) << c.status();

  std::atomic<bool> stop{false};
  std::atomic<size_t> most_endpoints{0};
  Tally lockd_tally, etcdctl_tally;
  std::thread lockd_load(LockdPutGetLoop, c->get(), "lockd/", &stop,
                         &lockd_tally, &most_endpoints);
  std::thread etcdctl_load(EtcdctlPutGetLoop, first_three, "etcdctl/", &stop,
                           &etcdctl_tally);
  LetRun(&lockd_tally, 20);

  // 3 -> 5. The new members start before they are added (they wait to be);
  // StartMember returns once each serves clients.
  const int m4 = cluster.AddSpec();
  const int m5 = cluster.AddSpec();
  std::vector<std::string> all;
  for (int i = 0; i < cluster.size(); ++i) {
    all.push_back(absl::StrCat(cluster.member(i).name, "=",
                               cluster.member(i).peer_url()));
  }
  // Interrupted: m4 is added as a learner but never starts, so the resize
  // gives up, saying how to start it and to run again.
  absl::StatusOr<CommandResult> first = RunCommand(
      {Runfile("lockd/lockctl"), "--endpoints=" + pinned, "cluster", "resize",
       "--members=" + absl::StrJoin(all, ","), "--wait-timeout=2s"},
      absl::Seconds(60));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NE(first->exit_code, 0);
  EXPECT_NE(first->out.find("adding m4"), std::string::npos) << first->out;
  EXPECT_NE(first->out.find("--name=m4 --initial-advertise-peer-urls=" +
                            cluster.member(m4).peer_url()),
            std::string::npos)
      << first->out;
  EXPECT_NE(first->err.find("run the same `lockctl cluster resize` again"),
            std::string::npos)
      << first->err;

  // Run again with the new members starting: it continues with m4.
  absl::Status start4, start5;
  std::thread s4([&] {
    start4 = cluster.StartMember(m4, {"--initial-cluster-state=existing"},
                                 absl::Seconds(60));
  });
  std::thread s5([&] {
    start5 = cluster.StartMember(m5, {"--initial-cluster-state=existing"},
                                 absl::Seconds(60));
  });
  absl::StatusOr<CommandResult> grow = Resize(pinned, absl::StrJoin(all, ","));
  s4.join();
  s5.join();
  ASSERT_TRUE(grow.ok()) << grow.status();
  EXPECT_EQ(grow->exit_code, 0) << grow->out << grow->err;
  EXPECT_EQ(grow->out.find("adding m4"), std::string::npos) << grow->out;
  EXPECT_NE(grow->out.find("waiting for learner m4"), std::string::npos)
      << grow->out;
  EXPECT_TRUE(start4.ok()) << start4;
  EXPECT_TRUE(start5.ok()) << start5;
  // m5 started before it was added, and waited to be.
  EXPECT_NE(cluster.process(m5).output().find("waiting to be added"),
            std::string::npos);
  // The client, given one endpoint, learns all five from MemberList.
  for (absl::Time until = absl::Now() + absl::Seconds(15);
       (*c)->current_endpoints().size() < 5 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ((*c)->current_endpoints().size(), 5u)
      << absl::StrJoin((*c)->current_endpoints(), ",");
  LetRun(&lockd_tally, 20);

  // 5 -> 3: drop m1 (the pinned endpoint) and the leader (or, if m1 leads,
  // m5 too).
  const uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  int leader_index = cluster.MemberIndexOf(leader);
  ASSERT_GE(leader_index, 0);
  const int second_victim = leader_index == 0 ? m5 : leader_index;
  std::vector<std::string> keep;
  int keep_index = -1;
  for (int i = 1; i < cluster.size(); ++i) {
    if (i == second_victim) continue;
    keep.push_back(absl::StrCat(cluster.member(i).name, "=",
                                cluster.member(i).peer_url()));
    keep_index = i;
  }
  ASSERT_EQ(keep.size(), 3u);
  absl::StatusOr<CommandResult> shrink =
      Resize(cluster.member(keep_index).endpoint(), absl::StrJoin(keep, ","));
  ASSERT_TRUE(shrink.ok()) << shrink.status();
  EXPECT_EQ(shrink->exit_code, 0) << shrink->out << shrink->err;
  EXPECT_NE(shrink->out.find("moving leadership"), std::string::npos)
      << shrink->out;
  LetRun(&lockd_tally, 20);
  LetRun(&etcdctl_tally, 4);

  // The client forgot the removed members (its sync follows MemberList).
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  std::vector<std::string> now = (*c)->current_endpoints();
  while (now.size() != 3 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    now = (*c)->current_endpoints();
  }
  stop = true;
  lockd_load.join();
  etcdctl_load.join();
  std::set<std::string> want;
  for (int i = 1; i < cluster.size(); ++i) {
    if (i != second_victim) want.insert(cluster.member(i).endpoint());
  }
  EXPECT_EQ(std::set<std::string>(now.begin(), now.end()), want)
      << absl::StrJoin(now, ",");
  EXPECT_EQ(most_endpoints.load(), 5u)
      << "the workload never ran with all five members";

  // Every acknowledged write is there, read from the remaining members.
  client::ClientOptions ro;
  ro.endpoints.assign(want.begin(), want.end());
  ro.auto_sync_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<client::Client>> reader =
      client::Client::Create(ro);
  ASSERT_TRUE(reader.ok());
  for (Tally* t : {&lockd_tally, &etcdctl_tally}) {
    absl::MutexLock lock(&t->mu);
    for (const auto& [key, value] : t->acked) {
      etcdserverpb::RangeRequest get;
      get.set_key(key);
      absl::StatusOr<etcdserverpb::RangeResponse> r = (*reader)->Range(get);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->kvs_size(), 1) << "acknowledged write lost: " << key;
      EXPECT_EQ(r->kvs(0).value(), value) << key;
    }
    EXPECT_TRUE(t->failures.empty())
        << t->failures.size() << " failed calls, first: "
        << absl::StrJoin(
               t->failures.begin(),
               t->failures.begin() + std::min<size_t>(5, t->failures.size()),
               "\n");
  }
  for (auto [name, t] : {std::make_pair("lockd client", &lockd_tally),
                         std::make_pair("etcdctl", &etcdctl_tally)}) {
    absl::MutexLock lock(&t->mu);
    std::printf(
        "%s: %lld calls, %zu failed, %zu acked writes, longest %s (%s)\n", name,
        static_cast<long long>(t->calls), t->failures.size(), t->acked.size(),
        absl::FormatDuration(t->longest).c_str(), t->longest_what.c_str());
    ::testing::Test::RecordProperty(
        absl::StrCat(name == std::string("etcdctl") ? "etcdctl" : "lockd",
                     "_longest_call_ms"),
        static_cast<int>(absl::ToInt64Milliseconds(t->longest)));
  }
}

TEST(ResizeTest, RefusesARemovalThatWouldLeaveNoQuorum) {
  // m3 is down; removing the healthy m2 would leave m1 alone of two voters.
  LocalCluster cluster(3, "refuse");
  ASSERT_TRUE(cluster.StartAll().ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  // Every member has published its client URLs before m3 goes away
  // (bootstrap members are listed by name from the start).
  for (absl::Time until = absl::Now() + absl::Seconds(15);
       absl::Now() < until;) {
    absl::StatusOr<CommandResult> l =
        RunEtcdctl(cluster.member(0).endpoint(), {"member", "list"});
    if (l.ok() && l->exit_code == 0 &&
        l->out.find(cluster.member(1).client_url()) != std::string::npos &&
        l->out.find(cluster.member(2).client_url()) != std::string::npos) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  cluster.StopMember(2);
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string target = absl::StrCat("m1=", cluster.member(0).peer_url(),
                                          ",m3=", cluster.member(2).peer_url());
  absl::StatusOr<CommandResult> r =
      Resize(cluster.member(0).endpoint(), target);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->exit_code, 0);
  EXPECT_NE(r->err.find("refusing to remove m2"), std::string::npos) << r->err;
  EXPECT_NE(r->err.find("fewer than a quorum"), std::string::npos) << r->err;
  absl::StatusOr<CommandResult> list =
      RunEtcdctl(cluster.member(0).endpoint(), {"member", "list"});
  ASSERT_TRUE(list.ok());
  EXPECT_NE(list->out.find(", m2,"), std::string::npos) << list->out;
}

}  // namespace
}  // namespace lockd::testing
