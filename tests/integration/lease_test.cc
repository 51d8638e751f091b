// Leases on a real 3-member lockd cluster, driven by Debian's etcdctl and by
// lockctl: grant/revoke/timetolive/list/keep-alive with etcd's output and
// errors, revoke deleting every attached key in one revision, expiry through
// the leader, and across leader changes (move-leader and kill -9) a kept-alive
// lease that never expires, a remaining TTL that is not reset, and no key
// that expires early.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

CommandResult Run(const std::vector<std::string>& argv,
                  const std::vector<std::string>& env = {}) {
  absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(30), env);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : CommandResult{};
}

CommandResult Lockctl(const std::string& endpoints,
                      const std::vector<std::string>& args) {
  std::vector<std::string> argv = {Runfile("lockd/lockctl"),
                                   "--endpoints=" + endpoints,
                                   "--command-timeout=10s"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

// The number after `marker` in `text` (decimal, or hex for ids), -1 if none.
int64_t NumberAfter(const std::string& text, const std::string& marker,
                    bool hex = false) {
  size_t at = text.find(marker);
  if (at == std::string::npos) return -1;
  return std::strtoll(text.c_str() + at + marker.size(), nullptr,
                      hex ? 16 : 10);
}

// "lease 694d... granted with TTL(30s)" -> the id, as etcdctl prints it.
std::string GrantedId(const CommandResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("lease ", 0), 0u) << r.out;
  return r.out.size() >= 22 ? r.out.substr(6, 16) : "";
}

int64_t Revision(const std::string& endpoints) {
  return NumberAfter(Etcdctl(endpoints, {"get", "nothing", "-w", "json"}).out,
                     "\"revision\":");
}

bool KeyExists(const std::string& endpoints, const std::string& key) {
  CommandResult r = Etcdctl(endpoints, {"get", key, "--keys-only"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out.find(key) != std::string::npos;
}

// Remaining seconds of a lease as `timetolive` reports it (-1: expired).
int64_t Remaining(const std::string& endpoints, const std::string& id) {
  CommandResult r = Etcdctl(endpoints, {"lease", "timetolive", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.out.find("already expired") != std::string::npos) return -1;
  return NumberAfter(r.out, "remaining(");
}

// The member id of member `i`, from its own status.
uint64_t MemberId(LocalCluster& cluster, int i) {
  CommandResult s = Etcdctl(cluster.member(i).endpoint(),
                            {"endpoint", "status", "-w", "json"});
  const std::string marker = "\"member_id\":";
  size_t at = s.out.find(marker);
  if (at == std::string::npos) return 0;
  return std::strtoull(s.out.c_str() + at + marker.size(), nullptr, 10);
}

// JSON output with every number replaced by N, to compare two tools'
// output field by field.
std::string JsonShape(const std::string& s) {
  return std::regex_replace(s, std::regex("-?[0-9]+"), "N");
}

TEST(LeaseTest, Etcdctl_GrantRevokeTimeToLiveList_EtcdOutputAndErrors) {
  LocalCluster cluster(3, "leaseops");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string all = cluster.endpoints();

  // Grant through one member, attach keys through every member.
  const std::string id = GrantedId(
      Etcdctl(cluster.member(1).endpoint(), {"lease", "grant", "60"}));
  for (int i = 0; i < 3; ++i) {
    CommandResult put =
        Etcdctl(cluster.member(i).endpoint(),
                {"put", "--lease=" + id, absl::StrCat("l/", i), "v"});
    ASSERT_EQ(put.exit_code, 0) << put.err;
  }
  ASSERT_EQ(Etcdctl(all, {"put", "l/free", "v"}).exit_code, 0);
  // TimeToLive from every member (followers ask the leader).
  for (int i = 0; i < 3; ++i) {
    CommandResult ttl = Etcdctl(cluster.member(i).endpoint(),
                                {"lease", "timetolive", id, "--keys"});
    ASSERT_EQ(ttl.exit_code, 0) << ttl.err;
    EXPECT_EQ(
        ttl.out.rfind("lease " + id + " granted with TTL(60s), remaining(", 0),
        0u)
        << ttl.out;
    EXPECT_NE(ttl.out.find("attached keys([l/0 l/1 l/2])"), std::string::npos)
        << ttl.out;
    EXPECT_GE(NumberAfter(ttl.out, "remaining("), 50);
  }
  CommandResult list = Etcdctl(all, {"lease", "list"});
  EXPECT_EQ(list.out, "found 1 leases\n" + id + "\n");
  // lockctl agrees.
  CommandResult lttl = Lockctl(all, {"lease", "timetolive", id, "--keys"});
  EXPECT_NE(lttl.out.find("attached keys([l/0 l/1 l/2])"), std::string::npos)
      << lttl.out << lttl.err;
  EXPECT_EQ(Lockctl(all, {"lease", "list"}).out, list.out);
  // -w json as etcdctl prints it: the Go client's structs, the header's
  // fields inline. The same text, numbers aside (a TTL may tick between the
  // two calls).
  const std::string m0 = cluster.member(0).endpoint();
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"lease", "list", "-w", "json"},
        std::vector<std::string>{"lease", "timetolive", id, "--keys", "-w",
                                 "json"},
        std::vector<std::string>{"lease", "timetolive", id, "-w", "json"}}) {
    CommandResult e = Etcdctl(m0, args);
    ASSERT_EQ(e.exit_code, 0) << e.err;
    EXPECT_EQ(JsonShape(Lockctl(m0, args).out), JsonShape(e.out))
        << absl::StrJoin(args, " ");
  }

  // Revoke: every attached key goes, in exactly one revision.
  const int64_t before = Revision(all);
  CommandResult revoke =
      Etcdctl(cluster.member(2).endpoint(), {"lease", "revoke", id});
  ASSERT_EQ(revoke.exit_code, 0) << revoke.err;
  EXPECT_EQ(revoke.out, "lease " + id + " revoked\n");
  EXPECT_EQ(Revision(all), before + 1);
  EXPECT_EQ(Etcdctl(all, {"get", "l/", "--prefix", "--keys-only"}).out,
            "l/free\n\n");
  // The keys existed at the revision before and not after.
  EXPECT_NE(Etcdctl(all, {"get", "l/0", "--rev=" + std::to_string(before)}).out,
            "");
  EXPECT_EQ(Etcdctl(all, {"lease", "timetolive", id}).out,
            "lease " + id + " already expired\n");
  EXPECT_EQ(Etcdctl(all, {"lease", "list"}).out, "found 0 leases\n");

  // etcd's errors for bad input.
  CommandResult big = Etcdctl(all, {"lease", "grant", "9000000001"});
  EXPECT_NE(big.exit_code, 0);
  EXPECT_NE(big.err.find("failed to grant lease (etcdserver: too large lease "
                         "TTL)"),
            std::string::npos)
      << big.err;
  CommandResult unknown_put = Etcdctl(all, {"put", "--lease=1234", "x", "y"});
  EXPECT_NE(unknown_put.err.find("etcdserver: requested lease not found"),
            std::string::npos)
      << unknown_put.err;
  CommandResult unknown_revoke = Etcdctl(all, {"lease", "revoke", id});
  EXPECT_NE(unknown_revoke.err.find(
                "failed to revoke lease (etcdserver: requested lease not "
                "found)"),
            std::string::npos)
      << unknown_revoke.err;
  CommandResult unknown_keep =
      Etcdctl(all, {"lease", "keep-alive", "--once", id});
  EXPECT_NE(unknown_keep.err.find("etcdserver: requested lease not found"),
            std::string::npos)
      << unknown_keep.err;
  CommandResult lockctl_big = Lockctl(all, {"lease", "grant", "9000000001"});
  EXPECT_NE(lockctl_big.err.find("too large lease TTL"), std::string::npos)
      << lockctl_big.err;
  // A TTL below the minimum is raised to it (1.5 election timeouts: 2 s).
  CommandResult small = Etcdctl(all, {"lease", "grant", "1"});
  EXPECT_NE(small.out.find("granted with TTL(2s)"), std::string::npos)
      << small.out;
  // Client-chosen ids: lockctl keep-alive --once and a duplicate grant.
  const std::string lid = GrantedId(Lockctl(all, {"lease", "grant", "30"}));
  CommandResult once = Lockctl(cluster.member(0).endpoint(),
                               {"lease", "keep-alive", "--once", lid});
  EXPECT_EQ(once.out, "lease " + lid + " keepalived with TTL(30)\n")
      << once.err;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"lease", "grant", "60", "-w", "json"},
        std::vector<std::string>{"lease", "keep-alive", "--once", lid, "-w",
                                 "json"}}) {
    CommandResult e = Etcdctl(m0, args);
    ASSERT_EQ(e.exit_code, 0) << e.err;
    EXPECT_EQ(JsonShape(Lockctl(m0, args).out), JsonShape(e.out))
        << absl::StrJoin(args, " ");
  }
  const std::string r1 = GrantedId(Lockctl(m0, {"lease", "grant", "30"}));
  const std::string r2 = GrantedId(Lockctl(m0, {"lease", "grant", "30"}));
  CommandResult erevoke = Etcdctl(m0, {"lease", "revoke", r1, "-w", "json"});
  ASSERT_EQ(erevoke.exit_code, 0) << erevoke.err;
  EXPECT_EQ(JsonShape(Lockctl(m0, {"lease", "revoke", r2, "-w", "json"}).out),
            JsonShape(erevoke.out));
}

TEST(LeaseTest, ExpiredLeaseKeysVanish_NeverEarly) {
  LocalCluster cluster(3, "leaseexpiry");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string all = cluster.endpoints();
  const absl::Time granted_before = absl::Now();
  const std::string id = GrantedId(Lockctl(all, {"lease", "grant", "4"}));
  ASSERT_EQ(Lockctl(all, {"put", "--lease", id, "exp/a", "1"}).exit_code, 0);
  ASSERT_EQ(Lockctl(all, {"put", "--lease", id, "exp/b", "2"}).exit_code, 0);
  const int64_t after_puts = Revision(all);
  // Present for the whole TTL (a read that ended before the TTL passed
  // since the grant was sent must see them), gone soon after.
  absl::Time gone_at = absl::InfiniteFuture();
  while (absl::Now() < granted_before + absl::Seconds(15)) {
    const bool exists = KeyExists(all, "exp/a");
    const absl::Time read_done = absl::Now();
    if (read_done < granted_before + absl::Seconds(4)) {
      ASSERT_TRUE(exists) << "expired early, after "
                          << (read_done - granted_before);
    }
    if (!exists) {
      gone_at = read_done;
      break;
    }
  }
  ASSERT_LT(gone_at, granted_before + absl::Seconds(15));
  // Both keys went in the same revision: one revision after the second put.
  EXPECT_FALSE(KeyExists(all, "exp/b"));
  EXPECT_EQ(Revision(all), after_puts + 1);
  EXPECT_EQ(Etcdctl(all, {"lease", "timetolive", id}).out,
            "lease " + id + " already expired\n");
}

TEST(LeaseTest, LeaderChanges_KeptAliveSurvives_RemainingNotReset) {
  LocalCluster cluster(3, "leasemove");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  const std::string all = cluster.endpoints();

  // A: TTL 5, kept alive by etcdctl through every endpoint. B: TTL 40,
  // never renewed.
  const std::string a = GrantedId(Etcdctl(all, {"lease", "grant", "5"}));
  const std::string b = GrantedId(Etcdctl(all, {"lease", "grant", "40"}));
  const absl::Time b_granted = absl::Now();
  ASSERT_EQ(Etcdctl(all, {"put", "--lease=" + a, "kept", "1"}).exit_code, 0);
  ASSERT_EQ(Etcdctl(all, {"put", "--lease=" + b, "idle", "1"}).exit_code, 0);
  Subprocess keeper;
  ASSERT_TRUE(keeper
                  .Start({"/usr/bin/etcdctl", "--endpoints=" + all, "lease",
                          "keep-alive", a},
                         {"ETCDCTL_API=3"})
                  .ok());
  ASSERT_TRUE(
      keeper.WaitForOutput("keepalived with TTL(5)", absl::Seconds(10)));

  // Elapsed on B before the change.
  while (absl::Now() < b_granted + absl::Seconds(6)) {
    ASSERT_TRUE(KeyExists(all, "kept"));
  }
  const int64_t b_before = Remaining(all, b);
  ASSERT_GE(b_before, 30);
  ASSERT_LE(b_before, 34);

  // 1. A graceful transfer (etcd's move-leader).
  int li = cluster.MemberIndexOf(leader);
  ASSERT_GE(li, 0);
  const int target = (li + 1) % 3;
  const uint64_t target_id = MemberId(cluster, target);
  CommandResult move =
      Etcdctl(all, {"move-leader", absl::StrFormat("%x", target_id)});
  ASSERT_EQ(move.exit_code, 0) << move.err;
  ASSERT_EQ(cluster.WaitForLeader(absl::Seconds(10)), target_id);
  // B keeps its remaining time (plus at most a checkpoint period and the
  // new leader's grace), not a fresh 40 s.
  const int64_t b_after_move = Remaining(all, b);
  const int64_t b_elapsed = absl::ToInt64Seconds(absl::Now() - b_granted);
  EXPECT_LE(b_after_move, 40 - b_elapsed + 3) << "elapsed " << b_elapsed;
  EXPECT_GE(b_after_move, 40 - b_elapsed - 2) << "elapsed " << b_elapsed;

  // A stays alive across the change, for several of its TTLs.
  absl::Time until = absl::Now() + absl::Seconds(8);
  while (absl::Now() < until) ASSERT_TRUE(KeyExists(all, "kept"));

  // 2. kill -9 the leader.
  leader = cluster.WaitForLeader(absl::Seconds(10));
  li = cluster.MemberIndexOf(leader);
  ASSERT_GE(li, 0);
  const int64_t b_before_kill = Remaining(all, b);
  cluster.process(li).Signal(SIGKILL);
  ASSERT_TRUE(cluster.process(li).Wait(absl::Seconds(10)).ok());
  const absl::Time killed = absl::Now();
  std::string rest;
  for (int i = 0; i < 3; ++i) {
    if (i == li) continue;
    if (!rest.empty()) rest += ",";
    rest += cluster.member(i).endpoint();
  }
  // The survivors elect a leader; A is kept alive through it, B is not
  // reset.
  until = killed + absl::Seconds(12);
  while (absl::Now() < until) {
    ASSERT_TRUE(KeyExists(rest, "kept"))
        << "after " << (absl::Now() - killed) << "\n"
        << keeper.output();
  }
  const int64_t b_after_kill = Remaining(rest, b);
  const int64_t since_kill = absl::ToInt64Seconds(absl::Now() - killed);
  // The new leader counts B's checkpointed remaining time from its own
  // promotion, plus one election timeout of grace, so B may gain the time
  // the election took (up to two election timeouts after the kill), the
  // checkpoint's age and the grace: a few seconds, never a reset to 40 s.
  EXPECT_LE(b_after_kill, b_before_kill - since_kill + 6);
  EXPECT_GE(b_after_kill, b_before_kill - since_kill - 3);
  EXPECT_TRUE(KeyExists(rest, "idle"));

  // Once the keep-alives stop, A expires: within its TTL plus a grace, and
  // not before its TTL.
  keeper.Signal(SIGKILL);
  (void)keeper.Wait(absl::Seconds(10));
  const absl::Time stopped = absl::Now();
  absl::Time gone = absl::InfiniteFuture();
  while (absl::Now() < stopped + absl::Seconds(20)) {
    const bool exists = KeyExists(rest, "kept");
    // etcdctl renews every TTL/3, so the last renewal left >= 3.3 s.
    if (absl::Now() < stopped + absl::Seconds(3)) {
      ASSERT_TRUE(exists);
    }
    if (!exists) {
      gone = absl::Now();
      break;
    }
  }
  EXPECT_LT(gone, stopped + absl::Seconds(20));
}

}  // namespace
}  // namespace lockd::testing
