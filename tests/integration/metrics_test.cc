// etcd's Prometheus metrics on a 3-member cluster, followed as it works:
// the counters a dashboard or an alert reads move by what the cluster did
// (every member applies every write once; the served member counts each
// RPC with its code), the disk and peer figures grow, and a leader change
// is seen. differential_test checks the names and types against etcd 3.4's.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// "name{labels}" -> value, from one GET /metrics.
using Scrape = std::map<std::string, double>;

Scrape ScrapeMetrics(const std::string& endpoint) {
  absl::StatusOr<CommandResult> r =
      RunCommand({"curl", "-sS", "-m", "10",
                  absl::StrCat("http://", endpoint, "/metrics")},
                 absl::Seconds(20));
  Scrape out;
  if (!r.ok() || r->exit_code != 0) {
    ADD_FAILURE() << "scraping " << endpoint << ": "
                  << (r.ok() ? r->err : std::string(r.status().message()));
    return out;
  }
  for (absl::string_view line : absl::StrSplit(r->out, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    double v = 0;
    if (space == absl::string_view::npos ||
        !absl::SimpleAtod(line.substr(space + 1), &v)) {
      ADD_FAILURE() << "not a sample line: " << line;
      continue;
    }
    out[std::string(line.substr(0, space))] = v;
  }
  return out;
}

double Get(const Scrape& s, const std::string& series) {
  auto it = s.find(series);
  return it == s.end() ? 0 : it->second;
}

std::string Handled(const std::string& code, const std::string& method) {
  return absl::StrCat(
      "grpc_server_handled_total{grpc_code=\"", code, "\",grpc_method=\"",
      method, "\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}");
}

// No bucket of a histogram holds more than its count, and the +Inf one
// holds all of it.
void CheckHistograms(const Scrape& s, const std::string& who) {
  int checked = 0;
  for (const auto& [series, count] : s) {
    const size_t pos = series.find("_count");
    if (pos == std::string::npos || pos + 6 != series.size()) continue;
    const std::string name = series.substr(0, pos);
    double inf = -1;
    int buckets = 0;
    for (auto it = s.lower_bound(name + "_bucket{");
         it != s.end() && absl::StartsWith(it->first, name + "_bucket{");
         ++it) {
      ++buckets;
      EXPECT_LE(it->second, count) << who << " " << it->first;
      if (absl::StrContains(it->first, "le=\"+Inf\"")) inf = it->second;
    }
    EXPECT_GT(buckets, 1) << who << " " << name;
    EXPECT_EQ(inf, count) << who << " " << name << ": +Inf bucket";
    ++checked;
  }
  EXPECT_GE(checked, 3) << who;
}

std::string ServerIdOf(const Scrape& s) {
  for (const auto& [series, v] : s) {
    if (absl::StartsWith(series, "etcd_server_id{server_id=\"")) {
      std::vector<std::string> parts = absl::StrSplit(series, '"');
      if (parts.size() >= 2) return parts[1];
    }
  }
  return "";
}

TEST(MetricsTest, CountersFollowTheClusterAsItWorks) {
  LocalCluster cluster(3, "metrics");
  ASSERT_TRUE(cluster.StartAll().ok());
  const uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  const int li = cluster.MemberIndexOf(leader);
  ASSERT_GE(li, 0);
  const std::string leader_ep = cluster.member(li).endpoint();
  // Writes before the first scrape settle (the members publish themselves).
  ASSERT_TRUE(cluster.WaitForPublished(absl::Seconds(30)));

  std::vector<Scrape> before(3);
  std::vector<std::string> ids(3);
  for (int i = 0; i < 3; ++i) {
    before[i] = ScrapeMetrics(cluster.member(i).endpoint());
    ids[i] = ServerIdOf(before[i]);
    ASSERT_FALSE(ids[i].empty()) << "member " << i;
  }
  EXPECT_EQ(ids[li], absl::StrCat(absl::Hex(leader)));

  const int kPuts = 20;
  for (int k = 0; k < kPuts; ++k) {
    ASSERT_EQ(Etcdctl(leader_ep, {"put", absl::StrCat("m", k), "value"}).out,
              "OK\n");
  }
  ASSERT_EQ(Etcdctl(leader_ep, {"txn"}, "\nput t1 a\nput t2 b\n\n\n").exit_code,
            0);
  ASSERT_EQ(Etcdctl(leader_ep, {"del", "m0"}).out, "1\n");
  // A read of a future revision: OutOfRange, counted with its code.
  CommandResult future = Etcdctl(leader_ep, {"get", "m1", "--rev=1000000"});
  EXPECT_NE(future.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(future.err, "future revision")) << future.err;

  // Every member applies every write once (followers a little later).
  std::vector<Scrape> after(3);
  for (int i = 0; i < 3; ++i) {
    const std::string ep = cluster.member(i).endpoint();
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    do {
      after[i] = ScrapeMetrics(ep);
    } while (Get(after[i], "etcd_mvcc_delete_total") -
                     Get(before[i], "etcd_mvcc_delete_total") <
                 1 &&
             absl::Now() < deadline);
    auto delta = [&](const std::string& series) {
      return Get(after[i], series) - Get(before[i], series);
    };
    const std::string who = absl::StrCat("member ", i);
    EXPECT_EQ(delta("etcd_mvcc_put_total"), kPuts + 2) << who;
    EXPECT_EQ(delta("etcd_mvcc_delete_total"), 1) << who;
    EXPECT_EQ(delta("etcd_mvcc_txn_total"), 1) << who;
    EXPECT_GE(delta("etcd_disk_wal_fsync_duration_seconds_count"), 1) << who;
    EXPECT_GT(delta("etcd_disk_wal_fsync_duration_seconds_sum"), 0) << who;
    EXPECT_GE(delta("etcd_disk_backend_commit_duration_seconds_count"), 1)
        << who;
    EXPECT_GT(delta("etcd_disk_wal_write_bytes_total"), kPuts * 5) << who;
    EXPECT_EQ(delta("etcd_server_proposals_failed_total"), 0) << who;
    EXPECT_EQ(Get(after[i], "etcd_server_has_leader"), 1) << who;
    EXPECT_EQ(Get(after[i], "etcd_server_is_leader"), i == li ? 1 : 0) << who;
    EXPECT_EQ(Get(after[i], "etcd_server_quota_backend_bytes"), 2147483648.0)
        << who;
    EXPECT_EQ(Get(after[i], "etcd_debugging_mvcc_compact_revision"), -1) << who;
    CheckHistograms(after[i], who);
    if (i == li) {
      // The member that served the calls counted each, with its code.
      EXPECT_EQ(delta(Handled("OK", "Put")), kPuts) << who;
      EXPECT_EQ(delta(Handled("OK", "Txn")), 1) << who;
      EXPECT_EQ(delta(Handled("OK", "DeleteRange")), 1) << who;
      EXPECT_EQ(delta(Handled("OutOfRange", "Range")), 1) << who;
      EXPECT_EQ(delta("grpc_server_started_total{grpc_method=\"Put\","
                      "grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}"),
                kPuts)
          << who;
      // The leader sent the writes to both followers.
      for (int j = 0; j < 3; ++j) {
        if (j == li) continue;
        const std::string to = absl::StrCat(
            "etcd_network_peer_sent_bytes_total{To=\"", ids[j], "\"}");
        EXPECT_GT(delta(to), kPuts * 256 / 8) << to;
      }
    } else {
      EXPECT_EQ(delta(Handled("OK", "Put")), 0) << who;
      const std::string from = absl::StrCat(
          "etcd_network_peer_received_bytes_total{From=\"", ids[li], "\"}");
      EXPECT_GT(delta(from), kPuts * 256 / 8) << who << " " << from;
    }
  }

  // Leases: granted and revoked on every member (the TTL histogram counts
  // the grant), renewed on the leader; a watcher counted where it watches.
  {
    const std::string follower_ep = cluster.member((li + 1) % 3).endpoint();
    Subprocess watcher;
    ASSERT_TRUE(watcher
                    .Start({"/usr/bin/etcdctl", "--endpoints=" + follower_ep,
                            "watch", "--prefix", "w/"},
                           {"ETCDCTL_API=3"})
                    .ok());
    CommandResult grant = Etcdctl(leader_ep, {"lease", "grant", "60"});
    ASSERT_EQ(grant.exit_code, 0) << grant.err;
    // "lease 694d77aa9e38260f granted with TTL(60s)"
    std::vector<std::string> words = absl::StrSplit(grant.out, ' ');
    ASSERT_GE(words.size(), 2u) << grant.out;
    const std::string lease = words[1];
    ASSERT_EQ(
        Etcdctl(leader_ep, {"lease", "keep-alive", "--once", lease}).exit_code,
        0);
    ASSERT_EQ(Etcdctl(leader_ep, {"lease", "revoke", lease}).exit_code, 0);
    for (int i = 0; i < 3; ++i) {
      const std::string who = absl::StrCat("member ", i);
      const std::string ep = cluster.member(i).endpoint();
      const absl::Time deadline = absl::Now() + absl::Seconds(20);
      // Until this member applied the revoke, and the watcher's etcdctl
      // (started above) has opened its watch.
      Scrape s;
      do {
        s = ScrapeMetrics(ep);
      } while ((Get(s, "etcd_debugging_lease_revoked_total") -
                        Get(after[i], "etcd_debugging_lease_revoked_total") <
                    1 ||
                (ep == follower_ep &&
                 Get(s, "etcd_debugging_mvcc_watcher_total") < 1)) &&
               absl::Now() < deadline);
      auto delta = [&](const std::string& series) {
        return Get(s, series) - Get(after[i], series);
      };
      EXPECT_EQ(delta("etcd_debugging_lease_granted_total"), 1) << who;
      EXPECT_EQ(delta("etcd_debugging_lease_revoked_total"), 1) << who;
      EXPECT_EQ(delta("etcd_debugging_lease_ttl_total_count"), 1) << who;
      EXPECT_EQ(delta("etcd_debugging_lease_ttl_total_bucket{le=\"64\"}") -
                    delta("etcd_debugging_lease_ttl_total_bucket{le=\"32\"}"),
                1)
          << who;
      EXPECT_GE(delta("etcd_debugging_lease_renewed_total"), i == li ? 1 : 0)
          << who;
      if (ep == follower_ep) {
        EXPECT_EQ(Get(s, "etcd_debugging_mvcc_watcher_total"), 1) << who;
        EXPECT_EQ(Get(s, "etcd_debugging_mvcc_watch_stream_total"), 1) << who;
      } else {
        EXPECT_EQ(Get(s, "etcd_debugging_mvcc_watcher_total"), 0) << who;
      }
    }
    watcher.Stop();
  }

  // A leader change: the survivors see a new leader.
  cluster.StopMember(li);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  int next = -1;
  while (next < 0 && absl::Now() < deadline) {
    for (int i = 0; i < 3 && next < 0; ++i) {
      if (i == li) continue;
      Scrape s = ScrapeMetrics(cluster.member(i).endpoint());
      if (Get(s, "etcd_server_is_leader") == 1) next = i;
    }
  }
  ASSERT_GE(next, 0) << "no new leader within 30 s";
  Scrape s = ScrapeMetrics(cluster.member(next).endpoint());
  EXPECT_GE(Get(s, "etcd_server_leader_changes_seen_total"),
            Get(after[next], "etcd_server_leader_changes_seen_total") + 1);
  EXPECT_EQ(Get(s, "etcd_server_has_leader"), 1);
}

}  // namespace
}  // namespace lockd::testing
