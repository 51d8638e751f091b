// Membership changes on a real cluster, driven by Debian's etcdctl: a learner
// joins from the log and is promoted, a voter joins directly, the leader is
// removed (leadership moves first), and etcd's errors for changes that must
// be refused. Writes keep succeeding throughout.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

struct Listed {
  std::string id_hex;
  std::string status;  // "started" / "unstarted"
  std::string name;
  std::string peer_urls;
  std::string client_urls;
  bool learner = false;
};

// `member list` in etcdctl's simple format, by name ("" for unstarted).
std::map<std::string, Listed> MemberList(const std::string& endpoint) {
  CommandResult r = Etcdctl(endpoint, {"member", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, Listed> out;
  for (absl::string_view line : absl::StrSplit(r.out, '\n')) {
    if (line.empty()) continue;
    std::vector<std::string> f = absl::StrSplit(line, ", ");
    if (f.size() != 6) {
      ADD_FAILURE() << "unexpected member list line: " << line;
      continue;
    }
    Listed m{f[0], f[1], f[2], f[3], f[4], f[5] == "true"};
    out[m.name] = m;
  }
  return out;
}

// Retries `args` until it succeeds (e.g. a promotion that must wait until
// the learner has caught up), up to `timeout`.
CommandResult CtlUntilOk(const std::string& endpoints,
                         const std::vector<std::string>& args,
                         absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  CommandResult r;
  do {
    r = Etcdctl(endpoints, args);
    if (r.exit_code == 0) return r;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  return r;
}

TEST(MembershipTest, Etcdctl_AddLearnerPromoteAddVoterRemoveLeader) {
  LocalCluster cluster(3, "members");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string ep1 = cluster.member(0).endpoint();
  for (int n = 0; n < 50; ++n) {
    ASSERT_EQ(Etcdctl(ep1, {"put", absl::StrCat("before/", n), "v"}).exit_code,
              0);
  }

  // Every member has published its name and client URLs.
  std::map<std::string, Listed> members;
  // (Names come from the initial cluster; the client URLs only once each
  // member has published them.)
  auto published = [&members] {
    if (members.size() != 3) return false;
    for (const char* name : {"m1", "m2", "m3"}) {
      auto it = members.find(name);
      if (it == members.end() || it->second.client_urls.empty()) return false;
    }
    return true;
  };
  for (int attempt = 0; attempt < 100; ++attempt) {
    members = MemberList(ep1);
    if (published()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(members.size(), 3u);
  EXPECT_EQ(members["m2"].client_urls, cluster.member(1).client_url());
  EXPECT_EQ(members["m2"].peer_urls, cluster.member(1).peer_url());
  EXPECT_EQ(members["m2"].status, "started");

  // A learner joins and replays the log.
  const int m4 = cluster.AddSpec();
  CommandResult add =
      Etcdctl(ep1, {"member", "add", "m4", "--learner",
                    "--peer-urls=" + cluster.member(m4).peer_url()});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  EXPECT_NE(add.out.find("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
            std::string::npos)
      << add.out;
  members = MemberList(ep1);
  ASSERT_EQ(members.count(""), 1u) << "the new member is listed unstarted";
  EXPECT_EQ(members[""].status, "unstarted");
  EXPECT_TRUE(members[""].learner);

  // Refused changes, with etcd's errors, change nothing.
  CommandResult dup =
      Etcdctl(ep1, {"member", "add", "again",
                    "--peer-urls=" + cluster.member(m4).peer_url()});
  EXPECT_NE(dup.exit_code, 0);
  EXPECT_NE(dup.err.find("etcdserver: Peer URLs already exists"),
            std::string::npos)
      << dup.err;
  CommandResult second = Etcdctl(ep1, {"member", "add", "x", "--learner",
                                       "--peer-urls=http://127.0.0.1:1"});
  EXPECT_NE(second.err.find("etcdserver: too many learner members in cluster"),
            std::string::npos)
      << second.err;
  CommandResult unknown = Etcdctl(ep1, {"member", "remove", "123456789"});
  EXPECT_NE(unknown.err.find("etcdserver: member not found"), std::string::npos)
      << unknown.err;
  CommandResult voter_promote =
      Etcdctl(ep1, {"member", "promote", members["m1"].id_hex});
  EXPECT_NE(
      voter_promote.err.find("etcdserver: can only promote a learner member"),
      std::string::npos)
      << voter_promote.err;
  EXPECT_EQ(MemberList(ep1).size(), 4u);

  ASSERT_TRUE(
      cluster.StartMember(m4, {"--initial-cluster-state=existing"}).ok());
  const std::string ep4 = cluster.member(m4).endpoint();
  // It serves what it replayed, and publishes its name.
  std::string value;
  for (int attempt = 0; attempt < 100 && value != "v\n"; ++attempt) {
    absl::SleepFor(absl::Milliseconds(100));
    value = Etcdctl(ep4, {"get", "before/49", "--consistency=s",
                          "--print-value-only"})
                .out;
  }
  EXPECT_EQ(value, "v\n");
  for (int attempt = 0; attempt < 100 && !MemberList(ep1).count("m4");
       ++attempt) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(MemberList(ep1).count("m4"), 1u);
  EXPECT_EQ(MemberList(ep1)["m4"].client_urls, cluster.member(m4).client_url());
  CommandResult promote =
      CtlUntilOk(ep1, {"member", "promote", MemberList(ep1)["m4"].id_hex},
                 absl::Seconds(20));
  ASSERT_EQ(promote.exit_code, 0) << promote.err;
  EXPECT_FALSE(MemberList(ep1)["m4"].learner);

  // A voter joins directly (joint consensus), then the leader is removed.
  const int m5 = cluster.AddSpec();
  CommandResult add5 = Etcdctl(
      ep4,
      {"member", "add", "m5", "--peer-urls=" + cluster.member(m5).peer_url()});
  ASSERT_EQ(add5.exit_code, 0) << add5.err;
  ASSERT_TRUE(
      cluster.StartMember(m5, {"--initial-cluster-state=existing"}).ok());
  ASSERT_EQ(
      Etcdctl(cluster.member(m5).endpoint(), {"put", "via-m5", "ok"}).exit_code,
      0);

  uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  const int leader_index = cluster.MemberIndexOf(leader);
  ASSERT_GE(leader_index, 0);
  CommandResult remove =
      Etcdctl(ep4, {"member", "remove", absl::StrCat(absl::Hex(leader))});
  ASSERT_EQ(remove.exit_code, 0) << remove.err;
  std::map<std::string, Listed> after = MemberList(ep4);
  EXPECT_EQ(after.size(), 4u);
  EXPECT_EQ(after.count(cluster.member(leader_index).name), 0u);
  // The rest elect a leader among themselves and keep taking writes.
  for (int i = 0; i < cluster.size(); ++i) {
    if (i == leader_index) continue;
    CommandResult put =
        CtlUntilOk(cluster.member(i).endpoint(),
                   {"put", absl::StrCat("after/", i), "v"}, absl::Seconds(20));
    EXPECT_EQ(put.exit_code, 0) << "member " << i << ": " << put.err;
  }
  CommandResult keys =
      Etcdctl(ep4, {"get", "after/", "--prefix", "--keys-only"});
  std::set<std::string> written;
  for (absl::string_view line : absl::StrSplit(keys.out, '\n')) {
    if (!line.empty()) written.insert(std::string(line));
  }
  EXPECT_EQ(written.size(), 4u) << keys.out;
  cluster.StopMember(leader_index);
}

TEST(MembershipTest, StrictReconfigCheck_RefusesVoterWithoutStartedQuorum) {
  // Two of three members run (m3 never starts): writes work, but a fourth
  // voter would need 3 started members for its quorum, so it is refused. A
  // learner does not count towards the quorum and is accepted.
  LocalCluster cluster(3, "strict");
  ASSERT_TRUE(cluster.StartMember(0).ok());
  ASSERT_TRUE(cluster.StartMember(1).ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string ep = cluster.member(0).endpoint();
  ASSERT_EQ(CtlUntilOk(ep, {"put", "k", "v"}, absl::Seconds(20)).exit_code, 0);
  CommandResult add =
      Etcdctl(ep, {"member", "add", "m4", "--peer-urls=http://127.0.0.1:2"});
  EXPECT_NE(add.exit_code, 0) << add.out;
  EXPECT_NE(add.err.find("etcdserver: re-configuration failed due to not "
                         "enough started members"),
            std::string::npos)
      << add.err;
  EXPECT_EQ(MemberList(ep).size(), 3u);
  CommandResult learner = Etcdctl(ep, {"member", "add", "m4", "--learner",
                                       "--peer-urls=http://127.0.0.1:3"});
  EXPECT_EQ(learner.exit_code, 0) << learner.err;
  EXPECT_EQ(MemberList(ep).size(), 4u);
}

TEST(MembershipTest, RemovedMember_RelaysClientsThroughGraceThenExits) {
  LocalCluster cluster(3, "retired");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(cluster.StartMember(i, {"--removed-member-grace=4s"}).ok());
  }
  uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  const int victim = (cluster.MemberIndexOf(leader) + 1) % 3;
  const std::string removed_ep = cluster.member(victim).endpoint();
  std::map<std::string, Listed> members;
  for (int attempt = 0; attempt < 50 && members.size() < 3; ++attempt) {
    // Every member has published its client URLs (the proxy relays to
    // them).
    members = MemberList(removed_ep);
    bool all_published = true;
    for (const auto& [name, m] : members) {
      all_published &= !m.client_urls.empty();
    }
    if (!all_published) members.clear();
    absl::SleepFor(absl::Milliseconds(100));
  }
  const std::string id = members[cluster.member(victim).name].id_hex;
  ASSERT_FALSE(id.empty());
  const std::string other_ep = cluster.member((victim + 1) % 3).endpoint();
  CommandResult remove = Etcdctl(other_ep, {"member", "remove", id});
  ASSERT_EQ(remove.exit_code, 0) << remove.err;

  // A client that only knows the removed member keeps working: its writes
  // and linearizable reads reach the cluster.
  CommandResult put =
      CtlUntilOk(removed_ep, {"put", "via-removed", "yes"}, absl::Seconds(10));
  EXPECT_EQ(put.exit_code, 0) << put.err;
  EXPECT_EQ(Etcdctl(other_ep, {"get", "via-removed", "--print-value-only"}).out,
            "yes\n");
  EXPECT_EQ(
      Etcdctl(removed_ep, {"get", "via-removed", "--print-value-only"}).out,
      "yes\n");
  std::map<std::string, Listed> now = MemberList(removed_ep);
  EXPECT_EQ(now.size(), 2u);
  EXPECT_EQ(now.count(cluster.member(victim).name), 0u);
  // It says what it is.
  CommandResult status = Etcdctl(removed_ep, {"endpoint", "status"});
  EXPECT_NE(status.out.find("this member was removed from the cluster"),
            std::string::npos)
      << status.out << status.err;

  // After the grace period it exits cleanly; the cluster is untouched.
  absl::StatusOr<int> code = cluster.process(victim).Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << "the removed member did not exit";
  EXPECT_EQ(*code, 0);
  EXPECT_NE(cluster.process(victim).output().find("grace period over"),
            std::string::npos);
  EXPECT_EQ(Etcdctl(other_ep, {"put", "after-exit", "ok"}).exit_code, 0);
}

}  // namespace
}  // namespace lockd::testing
