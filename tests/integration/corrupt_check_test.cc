// etcd's corruption checks against a member whose data really diverged: a
// stopped follower's store gets a write that never went through the log
// (tests/integration/store_tamper). With --experimental-initial-corrupt-check
// it refuses to start; without, the leader's periodic check
// (--experimental-corrupt-check-time) raises the CORRUPT alarm naming it,
// and the cluster refuses writes with etcd's error while reads go on.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// The member ID (decimal, as etcdctl prints alarms) serving `endpoint`.
std::string MemberIdOf(const std::string& endpoint) {
  CommandResult r = Etcdctl(endpoint, {"endpoint", "status", "-w", "json"});
  const std::string marker = "\"member_id\":";
  const size_t at = r.out.find(marker);
  if (at == std::string::npos) return "";
  const size_t from = at + marker.size();
  return r.out.substr(from, r.out.find_first_not_of("0123456789", from) - from);
}

// A setup write, tried again until `timeout`: right after a member restarts
// or stops, a slow machine (ASan) may need an election or a reconnect first.
// Each try waits for etcdctl's own command timeout.
bool PutEventually(const std::string& endpoints, const std::string& key,
                   absl::Duration timeout = absl::Seconds(60)) {
  const absl::Time deadline = absl::Now() + timeout;
  do {
    if (Etcdctl(endpoints, {"put", key, "v"}).exit_code == 0) return true;
  } while (absl::Now() < deadline);
  return false;
}

TEST(CorruptCheckTest, DivergedFollowerRefusedAtStartAndAlarmedByTheLeader) {
  LocalCluster cluster(3, "corrupt");
  const std::vector<std::string> periodic = {
      "--experimental-corrupt-check-time=1s"};
  std::vector<std::string> with_initial = periodic;
  with_initial.push_back("--experimental-initial-corrupt-check");
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(cluster.StartMember(i, periodic).ok());
  const uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  const int l = cluster.MemberIndexOf(leader);
  ASSERT_GE(l, 0);
  const int f = (l + 1) % 3, g = (l + 2) % 3;
  const std::string all = cluster.endpoints();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(PutEventually(all, absl::StrCat("k", i)));
  }

  // A healthy member passes the initial check.
  cluster.StopMember(g);
  ASSERT_TRUE(cluster.StartMember(g, with_initial).ok());
  EXPECT_NE(
      cluster.process(g).output().find("passed the initial corruption check"),
      std::string::npos)
      << cluster.process(g).output();
  const std::string f_id = MemberIdOf(cluster.member(f).endpoint());
  ASSERT_FALSE(f_id.empty());

  // f's data diverges while it is down; the others go on.
  cluster.StopMember(f);
  absl::StatusOr<CommandResult> tamper = RunCommand(
      {Runfile("tests/integration/store_tamper"), cluster.member(f).data_dir},
      absl::Seconds(30));
  ASSERT_TRUE(tamper.ok()) << tamper.status();
  ASSERT_EQ(tamper->exit_code, 0) << tamper->err;
  const std::string rest = absl::StrCat(cluster.member(l).endpoint(), ",",
                                        cluster.member(g).endpoint());
  for (int i = 5; i < 10; ++i) {
    ASSERT_TRUE(PutEventually(rest, absl::StrCat("k", i)));
  }

  // With the initial check, f refuses to start, saying why.
  EXPECT_FALSE(cluster.StartMember(f, with_initial).ok());
  absl::StatusOr<int> code = cluster.process(f).Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_NE(
      cluster.process(f).output().find("found data inconsistency with peers"),
      std::string::npos)
      << cluster.process(f).output();

  // Without it f starts; the leader's periodic check names it.
  ASSERT_TRUE(cluster.StartMember(f, periodic).ok());
  const std::string alarm = "memberID:" + f_id + " alarm:CORRUPT";
  std::string alarms;
  for (int i = 0; i < 60 && alarms.find(alarm) == std::string::npos; ++i) {
    absl::SleepFor(absl::Milliseconds(500));
    alarms = Etcdctl(rest, {"alarm", "list"}).out;
  }
  ASSERT_NE(alarms.find(alarm), std::string::npos) << alarms;
  // Writes are refused, as etcd's; reads go on.
  CommandResult put = Etcdctl(rest, {"put", "after", "x"});
  EXPECT_NE(put.exit_code, 0);
  EXPECT_NE(put.err.find("etcdserver: corrupt cluster"), std::string::npos)
      << put.err;
  CommandResult grant = Etcdctl(rest, {"lease", "grant", "60"});
  EXPECT_NE(grant.err.find("etcdserver: corrupt cluster"), std::string::npos)
      << grant.err;
  EXPECT_EQ(Etcdctl(rest, {"get", "k9"}).out, "k9\nv\n");
  EXPECT_EQ(Etcdctl(rest, {"get", "after"}).out, "");
}

}  // namespace
}  // namespace lockd::testing
