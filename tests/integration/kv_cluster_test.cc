// A 3-member lockd cluster driven by Debian's etcdctl and by a plain gRPC
// client: every KV operation through every member, etcd's errors for bad
// input, and no acknowledged write lost when the leader is killed.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

TEST(KvClusterTest, Etcdctl_EveryOperationThroughEveryMember) {
  LocalCluster cluster(3, "kvops");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(cluster.StartMember(i, {"--max-txn-ops=4"}).ok());
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string all = cluster.endpoints();

  // Writes through each member (followers forward to the leader).
  for (int i = 0; i < 3; ++i) {
    CommandResult put =
        Etcdctl(cluster.member(i).endpoint(),
                {"put", absl::StrCat("k", i), absl::StrCat("v", i)});
    ASSERT_EQ(put.exit_code, 0) << put.err;
    EXPECT_EQ(put.out, "OK\n");
  }
  // Linearizable and serializable reads on each member see all of them.
  for (int i = 0; i < 3; ++i) {
    CommandResult get =
        Etcdctl(cluster.member(i).endpoint(), {"get", "k", "--prefix"});
    ASSERT_EQ(get.exit_code, 0) << get.err;
    EXPECT_EQ(get.out, "k0\nv0\nk1\nv1\nk2\nv2\n") << "member " << i;
    CommandResult ser =
        Etcdctl(cluster.member(i).endpoint(),
                {"get", "k", "--prefix", "--consistency=s", "--keys-only"});
    ASSERT_EQ(ser.exit_code, 0) << ser.err;
  }
  // Overwrite, then read history; sort, limit, count.
  ASSERT_EQ(Etcdctl(all, {"put", "k0", "v0-new"}).exit_code, 0);
  CommandResult hist = Etcdctl(all, {"get", "k0", "--rev=2"});
  EXPECT_EQ(hist.out, "k0\nv0\n");
  CommandResult sorted =
      Etcdctl(all, {"get", "k", "--prefix", "--sort-by=MODIFY",
                    "--order=DESCEND", "--limit=1"});
  EXPECT_EQ(sorted.out, "k0\nv0-new\n");
  CommandResult count =
      Etcdctl(all, {"get", "k", "--prefix", "--limit=1", "-w", "json"});
  EXPECT_NE(count.out.find("\"count\":3"), std::string::npos) << count.out;
  EXPECT_NE(count.out.find("\"more\":true"), std::string::npos) << count.out;

  // Txn from a follower, both branches.
  std::string txn_text =
      "value(\"k1\") = \"v1\"\n\nput k1 v1-txn\nput txn-ran yes\n\nput "
      "txn-ran no\n\n";
  CommandResult txn = Etcdctl(cluster.member(2).endpoint(), {"txn"}, txn_text);
  ASSERT_EQ(txn.exit_code, 0) << txn.err;
  EXPECT_EQ(txn.out, "SUCCESS\n\nOK\n\nOK\n");
  txn = Etcdctl(cluster.member(1).endpoint(), {"txn"}, txn_text);
  EXPECT_EQ(txn.out, "FAILURE\n\nOK\n");
  EXPECT_EQ(Etcdctl(all, {"get", "txn-ran", "--print-value-only"}).out, "no\n");

  // Delete with prev-kv.
  CommandResult del = Etcdctl(all, {"del", "k", "--prefix", "--prev-kv"});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(del.out, "3\nk0\nv0-new\nk1\nv1-txn\nk2\nv2\n");

  // Compaction, then etcd's error for a compacted revision.
  ASSERT_EQ(Etcdctl(all, {"compaction", "5", "--physical"}).exit_code, 0);
  CommandResult old = Etcdctl(all, {"get", "k0", "--rev=3"});
  EXPECT_NE(old.exit_code, 0);
  EXPECT_NE(old.err.find("required revision has been compacted"),
            std::string::npos)
      << old.err;

  // Bad input: etcd's words, and nothing changes.
  CommandResult future = Etcdctl(all, {"get", "x", "--rev=100000"});
  EXPECT_NE(future.err.find("required revision is a future revision"),
            std::string::npos)
      << future.err;
  CommandResult empty = Etcdctl(all, {"put", "", "v"});
  EXPECT_NE(empty.exit_code, 0);
  CommandResult too_many = Etcdctl(
      all, {"txn"}, "\nput a 1\nput b 2\nput c 3\nput d 4\nput e 5\n\n\n");
  EXPECT_NE(too_many.err.find("too many operations in txn request"),
            std::string::npos)
      << too_many.err;
  EXPECT_EQ(Etcdctl(all, {"get", "a"}).out, "");
}

TEST(KvClusterTest, Lockctl_KvAndClusterCommands) {
  LocalCluster cluster(3, "lockctl");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string all = cluster.endpoints();
  EXPECT_EQ(Lockctl(all, {"put", "app/a", "1"}).out, "OK\n");
  EXPECT_EQ(Lockctl(all, {"put", "app/a", "2", "--prev-kv"}).out,
            "OK\napp/a\n1\n");
  EXPECT_EQ(Lockctl(all, {"put", "app/b", "3"}).out, "OK\n");
  EXPECT_EQ(Lockctl(all, {"get", "app/", "--prefix"}).out,
            "app/a\n2\napp/b\n3\n");
  EXPECT_EQ(Lockctl(all, {"get", "app/a", "--rev=2"}).out, "app/a\n1\n");
  EXPECT_EQ(Lockctl(all, {"get", "app/", "--prefix", "--count-only"}).out,
            "2\n");
  // etcdctl reads what lockctl wrote, and the other way round.
  EXPECT_EQ(Etcdctl(all, {"get", "app/b", "--print-value-only"}).out, "3\n");

  CommandResult table = Lockctl(all, {"-w", "table", "endpoint", "status"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(table.out.find(cluster.member(i).endpoint()), std::string::npos);
  }
  CommandResult health = Lockctl(all, {"endpoint", "health"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  CommandResult members = Lockctl(all, {"member", "list"});
  ASSERT_EQ(members.exit_code, 0) << members.err;
  EXPECT_EQ(std::count(members.out.begin(), members.out.end(), '\n'), 3);

  // txn reads etcdctl's script format and prints what etcdctl prints.
  const std::string script =
      "value(\"app/a\") = \"2\"\n\nput app/t 1\nget app/b\ndel none\n\n"
      "put app/f 1\n\n";
  CommandResult ltxn = Lockctl(all, {"txn"}, script);
  ASSERT_EQ(ltxn.exit_code, 0) << ltxn.err;
  EXPECT_EQ(ltxn.out, "SUCCESS\n\nOK\n\napp/b\n3\n\n0\n");
  EXPECT_EQ(Etcdctl(all, {"txn"}, script).out, ltxn.out);
  CommandResult bad = Lockctl(all, {"txn"}, "bogus(\"a\") = \"1\"\n\n\n\n");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("malformed comparison"), std::string::npos);
  EXPECT_EQ(Lockctl(all, {"del", "app/t"}).out, "1\n");

  // Maintenance: every member has the same history hash (as etcdctl sees
  // it), defrag reports each member, no alarm is raised.
  CommandResult hashes = Lockctl(all, {"endpoint", "hashkv"});
  ASSERT_EQ(hashes.exit_code, 0) << hashes.err;
  std::vector<std::string> lines =
      absl::StrSplit(absl::StripSuffix(hashes.out, "\n"), '\n');
  ASSERT_EQ(lines.size(), 3u) << hashes.out;
  for (const std::string& line : lines) {
    const std::string hash = line.substr(line.find(", "));
    EXPECT_EQ(hash, lines[0].substr(lines[0].find(", "))) << hashes.out;
    EXPECT_NE(Etcdctl(all, {"endpoint", "hashkv"}).out.find(hash),
              std::string::npos);
  }
  CommandResult defrag =
      Lockctl(cluster.member(0).endpoint(), {"defrag", "--cluster"});
  ASSERT_EQ(defrag.exit_code, 0) << defrag.err;
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(defrag.out.find("Finished defragmenting etcd member[" +
                              cluster.member(i).endpoint() + "]"),
              std::string::npos)
        << defrag.out;
  }
  EXPECT_NE(defrag.err.find("Defragmenting "), std::string::npos);
  CommandResult no_alarms = Lockctl(all, {"alarm", "list"});
  EXPECT_EQ(no_alarms.exit_code, 0) << no_alarms.err;
  EXPECT_EQ(no_alarms.out, "");

  // A snapshot of one member, with progress on stderr; etcdctl takes lockd
  // snapshots too.
  std::string snap = TempDir("snaps") + "/lockctl.snap";
  CommandResult save =
      Lockctl(cluster.member(0).endpoint(), {"snapshot", "save", snap});
  ASSERT_EQ(save.exit_code, 0) << save.err;
  EXPECT_EQ(save.out, "Snapshot saved at " + snap + "\n");
  EXPECT_NE(save.err.find("Downloading snapshot"), std::string::npos);
  CommandResult multi = Lockctl(all, {"snapshot", "save", snap + "2"});
  EXPECT_EQ(multi.exit_code, 1);
  EXPECT_NE(multi.err.find("exactly one endpoint"), std::string::npos);
  CommandResult etcd_save = Etcdctl(cluster.member(1).endpoint(),
                                    {"snapshot", "save", snap + ".etcdctl"});
  EXPECT_EQ(etcd_save.exit_code, 0) << etcd_save.err;

  EXPECT_EQ(Lockctl(all, {"del", "app/", "--prefix"}).out, "2\n");
  EXPECT_EQ(Lockctl(all, {"compaction", "3"}).out, "compacted revision 3\n");
  CommandResult old = Lockctl(all, {"get", "app/a", "--rev=2"});
  EXPECT_EQ(old.exit_code, 1);
  EXPECT_NE(old.err.find("required revision has been compacted"),
            std::string::npos);

  // A member that is down: the error says what to check.
  CommandResult down =
      Lockctl("127.0.0.1:1", {"get", "x", "--command-timeout=1s"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("cannot connect to 127.0.0.1:1"), std::string::npos)
      << down.err;
}

TEST(KvClusterTest, OversizedRequest_RefusedWithEtcdErrorNothingStored) {
  LocalCluster cluster(1, "toolarge");
  ASSERT_TRUE(cluster.StartMember(0, {"--max-request-bytes=4096"}).ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string ep = cluster.member(0).endpoint();
  // etcdctl reads the value from standard input when it is not given.
  CommandResult big = Etcdctl(ep, {"put", "big"}, std::string(8000, 'x'));
  EXPECT_NE(big.exit_code, 0);
  EXPECT_NE(big.err.find("etcdserver: request is too large"), std::string::npos)
      << big.err;
  EXPECT_EQ(Etcdctl(ep, {"get", "big"}).out, "");
  // Just under the limit is fine.
  CommandResult ok = Etcdctl(ep, {"put", "small"}, std::string(3000, 'y'));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  // Far beyond it, gRPC itself refuses the message, as with etcd.
  CommandResult huge =
      Etcdctl(ep, {"put", "huge"}, std::string(700 * 1024, 'z'));
  EXPECT_NE(huge.exit_code, 0);
  EXPECT_EQ(Etcdctl(ep, {"get", "huge"}).out, "");
}

TEST(KvClusterTest, AutoCompaction_LeaderCompactsHistoryAsItAges) {
  LocalCluster cluster(3, "autocompact");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        cluster.StartMember(i, {"--auto-compaction-retention=2s"}).ok());
  }
  const uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  const std::string all = cluster.endpoints();
  ASSERT_EQ(Etcdctl(all, {"put", "k", "v1"}).out, "OK\n");  // revision 2
  // Writes go on; the history older than the retention goes, through the
  // log, on every member. (The first compaction may come at revision 1, the
  // revision of 2 s before the first sample; wait for one past it.)
  const std::string done = "auto compaction at revision ";
  int leader_index = cluster.MemberIndexOf(leader);
  ASSERT_GE(leader_index, 0);
  auto last_compacted = [&](int member) {
    const std::string log = cluster.process(member).output();
    int64_t last = 0;
    for (size_t at = log.find(done); at != std::string::npos;
         at = log.find(done, at + 1)) {
      const size_t from = at + done.size();
      int64_t rev = 0;
      if (absl::SimpleAtoi(log.substr(from, log.find(' ', from) - from),
                           &rev)) {
        last = std::max(last, rev);
      }
    }
    return last;
  };
  for (int n = 2; n < 300 && last_compacted(leader_index) <= 2; ++n) {
    ASSERT_EQ(Etcdctl(all, {"put", "k", absl::StrCat("v", n)}).exit_code, 0);
    absl::SleepFor(absl::Milliseconds(100));
  }
  const int64_t compacted = last_compacted(leader_index);
  ASSERT_GT(compacted, 2) << cluster.process(leader_index).output();
  const bool still_leader =
      cluster.WaitForLeader(absl::Seconds(30)) == leader &&
      cluster.process(leader_index).output().find("leader is now") ==
          cluster.process(leader_index).output().rfind("leader is now");
  for (int i = 0; i < 3; ++i) {
    const std::string ep = cluster.member(i).endpoint();
    CommandResult before = Etcdctl(
        ep,
        {"get", "k", absl::StrCat("--rev=", compacted - 1), "--consistency=s"});
    EXPECT_NE(before.err.find("required revision has been compacted"),
              std::string::npos)
        << "member " << i << ": " << before.out << before.err;
    CommandResult kept =
        Etcdctl(ep, {"get", "k", absl::StrCat("--rev=", compacted)});
    EXPECT_EQ(kept.exit_code, 0) << kept.err;
    // Only the leader compacts (if it led throughout).
    if (i != leader_index && still_leader) EXPECT_EQ(last_compacted(i), 0);
  }
}

TEST(KvClusterTest, Quota_NoSpaceAlarmRaisedAndCleared) {
  LocalCluster cluster(1, "quota");
  ASSERT_TRUE(cluster.StartMember(0, {"--quota-backend-bytes=1000000"}).ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string ep = cluster.member(0).endpoint();
  const std::string value(10000, 'v');
  int accepted = 0;
  CommandResult put;
  for (int i = 0; i < 200; ++i) {
    put = Etcdctl(ep, {"put", absl::StrCat("k", i)}, value);
    if (put.exit_code != 0) break;
    ++accepted;
  }
  // About 1 MB of data went in, then etcd's error.
  EXPECT_GT(accepted, 10);
  EXPECT_LT(accepted, 200);
  EXPECT_NE(put.err.find("etcdserver: mvcc: database space exceeded"),
            std::string::npos)
      << put.err;
  CommandResult alarms = Etcdctl(ep, {"alarm", "list"});
  EXPECT_NE(alarms.out.find("alarm:NOSPACE"), std::string::npos) << alarms.out;
  // lockctl lists it as etcdctl does (without the trailing space).
  EXPECT_EQ(Lockctl(ep, {"alarm", "list"}).out,
            std::string(absl::StripSuffix(alarms.out, " \n")) + "\n");
  // Reads and deletes still work, so the operator can free space.
  EXPECT_EQ(Etcdctl(ep, {"get", "k0", "--keys-only"}).out, "k0\n\n");
  ASSERT_EQ(Etcdctl(ep, {"del", "k", "--prefix"}).exit_code, 0);
  CommandResult rev = Etcdctl(ep, {"get", "k0", "-w", "json"});
  size_t at = rev.out.find("\"revision\":");
  ASSERT_NE(at, std::string::npos);
  std::string current =
      std::to_string(std::strtoll(rev.out.c_str() + at + 11, nullptr, 10));
  ASSERT_EQ(Etcdctl(ep, {"compaction", current, "--physical"}).exit_code, 0);
  ASSERT_EQ(Etcdctl(ep, {"defrag"}).exit_code, 0);
  // etcdctl prints the alarms it disarmed.
  CommandResult disarm = Etcdctl(ep, {"alarm", "disarm"});
  ASSERT_EQ(disarm.exit_code, 0);
  EXPECT_NE(disarm.out.find("alarm:NOSPACE"), std::string::npos) << disarm.out;
  EXPECT_EQ(Etcdctl(ep, {"alarm", "list"}).out, "");
  EXPECT_EQ(Etcdctl(ep, {"put", "after", "ok"}).exit_code, 0);
}

// A client that writes key after key, retrying on another member when one
// fails, and remembers what was acknowledged.
class Writer {
 public:
  explicit Writer(const LocalCluster& cluster) {
    for (int i = 0; i < cluster.size(); ++i) {
      stubs_.push_back(etcdserverpb::KV::NewStub(grpc::CreateChannel(
          cluster.member(i).endpoint(), grpc::InsecureChannelCredentials())));
    }
  }
  // Writes key n; true when some member acknowledged it. Like any client,
  // it backs off between attempts (a leader election takes 1-2 s).
  bool Write(int n) {
    for (int attempt = 0; attempt < 60; ++attempt) {
      if (attempt > 0) absl::SleepFor(absl::Milliseconds(100));
      auto& stub = stubs_[(n + attempt) % stubs_.size()];
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(3));
      etcdserverpb::PutRequest req;
      req.set_key(absl::StrFormat("d/%05d", n));
      req.set_value(absl::StrCat("value-", n));
      etcdserverpb::PutResponse resp;
      if (stub->Put(&ctx, req, &resp).ok()) {
        EXPECT_GT(resp.header().revision(), last_revision_);
        last_revision_ = resp.header().revision();
        acked_.insert(req.key());
        return true;
      }
    }
    return false;
  }
  const std::set<std::string>& acked() const { return acked_; }

 private:
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs_;
  std::set<std::string> acked_;
  int64_t last_revision_ = 0;
};

TEST(KvClusterTest, LeaderKilled_NoAcknowledgedWriteLost) {
  LocalCluster cluster(3, "durable");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  Writer writer(cluster);
  for (int n = 0; n < 60; ++n) ASSERT_TRUE(writer.Write(n)) << n;

  int victim = cluster.MemberIndexOf(leader);
  ASSERT_GE(victim, 0);
  cluster.process(victim).Signal(SIGKILL);
  ASSERT_TRUE(cluster.process(victim).Wait(absl::Seconds(10)).ok());
  for (int n = 60; n < 120; ++n) EXPECT_TRUE(writer.Write(n)) << n;

  // The killed leader comes back from its data directory and catches up.
  ASSERT_TRUE(cluster.StartMember(victim).ok());
  for (int n = 120; n < 150; ++n) EXPECT_TRUE(writer.Write(n)) << n;
  // A linearizable read on each member (after a barrier) sees every
  // acknowledged write.
  for (int i = 0; i < cluster.size(); ++i) {
    CommandResult keys = Etcdctl(cluster.member(i).endpoint(),
                                 {"get", "d/", "--prefix", "--keys-only"});
    ASSERT_EQ(keys.exit_code, 0) << keys.err;
    std::set<std::string> seen;
    for (absl::string_view line : absl::StrSplit(keys.out, '\n')) {
      if (!line.empty()) seen.insert(std::string(line));
    }
    for (const std::string& k : writer.acked()) {
      EXPECT_TRUE(seen.count(k)) << "member " << i << " lost " << k;
    }
  }
  EXPECT_EQ(writer.acked().size(), 150u);

  // Members agree byte for byte: the same HashKV at the same revision (a
  // member still catching up answers "future revision" until it has it).
  CommandResult status =
      Etcdctl(cluster.member(0).endpoint(), {"get", "d/00000", "-w", "json"});
  size_t at = status.out.find("\"revision\":");
  ASSERT_NE(at, std::string::npos) << status.out;
  int64_t rev = std::strtoll(status.out.c_str() + at + 11, nullptr, 10);
  std::set<uint32_t> hashes;
  for (int i = 0; i < cluster.size(); ++i) {
    auto stub = etcdserverpb::Maintenance::NewStub(grpc::CreateChannel(
        cluster.member(i).endpoint(), grpc::InsecureChannelCredentials()));
    etcdserverpb::HashKVResponse resp;
    grpc::Status st;
    for (int attempt = 0; attempt < 100; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
      etcdserverpb::HashKVRequest req;
      req.set_revision(rev);
      st = stub->HashKV(&ctx, req, &resp);
      if (st.ok()) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_TRUE(st.ok()) << st.error_message();
    hashes.insert(resp.hash());
  }
  EXPECT_EQ(hashes.size(), 1u) << "members diverged at revision " << rev;
}

// Starts every member and finds the leader: its id and index.
void StartWithLeader(LocalCluster& cluster, uint64_t* leader, int* index) {
  absl::Status started = cluster.StartAll();
  ASSERT_TRUE(started.ok()) << started;
  *leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(*leader, 0u);
  *index = cluster.MemberIndexOf(*leader);
  ASSERT_GE(*index, 0);
}

// A write (here a put, a compaction and an alarm change) a follower
// forwards to a leader that stops (SIGSTOP) before appending it: the follower
// named the leader's term, so once it applies the next leader's first entry it
// knows the write can never apply, and answers "etcdserver: leader changed"
// (not "request timed out" at the deadline). When the old leader resumes, it
// may still take the write in its old term; it never commits. Calls relayed
// to the leader whole (a physical compaction, a membership change) are given
// up with the same answer once the follower stops following that leader.
TEST(KvClusterTest,
     LeaderPaused_ForwardedWriteFailsAsLeaderChangedNeverApplies) {
  LocalCluster cluster(3, "oldterm");
  uint64_t leader = 0;
  int old = -1;
  ASSERT_NO_FATAL_FAILURE(StartWithLeader(cluster, &leader, &old));
  const int f = (old + 1) % cluster.size();
  // The follower's write stream to the leader is open.
  ASSERT_EQ(
      Etcdctl(cluster.member(f).endpoint(), {"put", "warm", "1"}).exit_code, 0);
  // And so is the client's connection to the follower: the write must reach
  // it while it still follows the old leader (sent after it has heard of
  // the next term, the write is rightly placed under the new leader).
  auto kv = etcdserverpb::KV::NewStub(grpc::CreateChannel(
      cluster.member(f).endpoint(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext warm_ctx;
    warm_ctx.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(10));
    etcdserverpb::RangeRequest warm;
    warm.set_key("warm");
    warm.set_serializable(true);
    etcdserverpb::RangeResponse warm_resp;
    ASSERT_TRUE(kv->Range(&warm_ctx, warm, &warm_resp).ok());
  }
  // Stopped before the write is sent: a leader still running when it
  // arrives may append it and replicate it, and the next leader then
  // rightly commits it (this made the test fail twice under load).
  ASSERT_TRUE(cluster.process(old).Pause());
  // Other writes go the same way, at the same time. Each runs on its own
  // thread; `call` makes the call with the context it is given.
  struct Side {
    std::string what;
    std::function<grpc::Status(grpc::ClientContext*)> call;
    grpc::Status st = grpc::Status::OK;
    absl::Duration took = absl::ZeroDuration();
  };
  auto maintenance = etcdserverpb::Maintenance::NewStub(grpc::CreateChannel(
      cluster.member(f).endpoint(), grpc::InsecureChannelCredentials()));
  auto members = etcdserverpb::Cluster::NewStub(grpc::CreateChannel(
      cluster.member(f).endpoint(), grpc::InsecureChannelCredentials()));
  std::vector<Side> sides;
  // A compaction of everything before "warm", on the fast path...
  sides.push_back({"compaction", [&](grpc::ClientContext* ctx) {
                     etcdserverpb::CompactionRequest req;
                     req.set_revision(2);
                     etcdserverpb::CompactionResponse resp;
                     return kv->Compact(ctx, req, &resp);
                   }});
  // ...and a physical one, relayed to the leader as a whole call.
  sides.push_back({"physical compaction", [&](grpc::ClientContext* ctx) {
                     etcdserverpb::CompactionRequest req;
                     req.set_revision(2);
                     req.set_physical(true);
                     etcdserverpb::CompactionResponse resp;
                     return kv->Compact(ctx, req, &resp);
                   }});
  // An alarm change (disarming one nobody raised).
  sides.push_back({"alarm change", [&](grpc::ClientContext* ctx) {
                     etcdserverpb::AlarmRequest req;
                     req.set_action(etcdserverpb::AlarmRequest::DEACTIVATE);
                     req.set_memberid(leader);
                     req.set_alarm(etcdserverpb::NOSPACE);
                     etcdserverpb::AlarmResponse resp;
                     return maintenance->Alarm(ctx, req, &resp);
                   }});
  // A membership change, relayed to the leader as a whole call.
  sides.push_back({"member add", [&](grpc::ClientContext* ctx) {
                     etcdserverpb::MemberAddRequest req;
                     req.add_peerurls("http://127.0.0.1:1");
                     req.set_islearner(true);
                     etcdserverpb::MemberAddResponse resp;
                     return members->MemberAdd(ctx, req, &resp);
                   }});
  std::vector<std::thread> side_threads;
  for (Side& side : sides) {
    side_threads.emplace_back([&side] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
      const absl::Time sent = absl::Now();
      side.st = side.call(&ctx);
      side.took = absl::Now() - sent;
    });
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  etcdserverpb::PutRequest put;
  put.set_key("lost");
  put.set_value("v");
  etcdserverpb::PutResponse put_resp;
  const absl::Time sent = absl::Now();
  grpc::Status st = kv->Put(&ctx, put, &put_resp);
  std::printf(
      "the write through the follower was answered after %s: %s (term of "
      "the answer %llu, if it succeeded)\n",
      absl::FormatDuration(absl::Now() - sent).c_str(),
      st.error_message().c_str(),
      static_cast<unsigned long long>(put_resp.header().raft_term()));
  for (std::thread& t : side_threads) t.join();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: leader changed");
  for (const Side& side : sides) {
    std::printf("the %s through the follower was answered after %s: %s\n",
                side.what.c_str(), absl::FormatDuration(side.took).c_str(),
                side.st.error_message().c_str());
    EXPECT_EQ(side.st.error_code(), grpc::StatusCode::UNAVAILABLE) << side.what;
    EXPECT_EQ(side.st.error_message(), "etcdserver: leader changed")
        << side.what;
  }
  cluster.process(old).Signal(SIGCONT);

  // Every member, the resumed one included, applies a later write and
  // holds no "lost".
  ASSERT_EQ(
      Etcdctl(cluster.member(f).endpoint(), {"put", "after", "1"}).exit_code,
      0);
  for (int i = 0; i < cluster.size(); ++i) {
    std::string after;
    for (int attempt = 0; attempt < 300 && after != "1\n"; ++attempt) {
      after = Etcdctl(cluster.member(i).endpoint(),
                      {"get", "after", "--consistency=s", "--print-value-only"})
                  .out;
      if (after != "1\n") absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_EQ(after, "1\n") << "member " << i;
    EXPECT_EQ(Etcdctl(cluster.member(i).endpoint(),
                      {"get", "lost", "--consistency=s", "--keys-only"})
                  .out,
              "")
        << "member " << i;
    // Nor did the compaction happen: revision 1 is still readable.
    CommandResult old_rev =
        Etcdctl(cluster.member(i).endpoint(),
                {"get", "warm", "--rev=1", "--consistency=s"});
    EXPECT_EQ(old_rev.exit_code, 0) << "member " << i << ": " << old_rev.err;
    // Nor was the member added.
    CommandResult list =
        Etcdctl(cluster.member(i).endpoint(), {"member", "list"});
    EXPECT_EQ(list.exit_code, 0) << list.err;
    EXPECT_EQ(std::count(list.out.begin(), list.out.end(), '\n'), 3)
        << "member " << i << ":\n"
        << list.out;
  }
}

// Lease commands through a follower take the same path: a grant is answered
// once the follower has applied it too (the client's next LeaseLeases there
// lists it), and a grant whose leader stops (SIGSTOP) is answered "leader
// changed" about an election timeout later, not at the 7 s request timeout
// as a grant relayed to the leader as a whole call was. The lost lease never
// appears.
TEST(KvClusterTest,
     LeaderPaused_LeaseGrantThroughFollowerFailsAsLeaderChanged) {
  LocalCluster cluster(3, "leaseterm");
  uint64_t leader = 0;
  int old = -1;
  ASSERT_NO_FATAL_FAILURE(StartWithLeader(cluster, &leader, &old));
  const int f = (old + 1) % cluster.size();
  auto lease_stub = [&](int i) {
    return etcdserverpb::Lease::NewStub(grpc::CreateChannel(
        cluster.member(i).endpoint(), grpc::InsecureChannelCredentials()));
  };
  auto leases_of = [&](etcdserverpb::Lease::Stub* stub,
                       std::set<int64_t>* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    etcdserverpb::LeaseLeasesRequest req;
    etcdserverpb::LeaseLeasesResponse resp;
    grpc::Status st = stub->LeaseLeases(&ctx, req, &resp);
    out->clear();
    for (const auto& l : resp.leases()) out->insert(l.id());
    return st;
  };
  auto grant = [](etcdserverpb::Lease::Stub* stub, int64_t id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(60));
    etcdserverpb::LeaseGrantRequest req;
    req.set_id(id);
    req.set_ttl(60);
    etcdserverpb::LeaseGrantResponse resp;
    return stub->LeaseGrant(&ctx, req, &resp);
  };
  constexpr int64_t kWarm = 0x1001, kLost = 0x2002;
  auto lease = lease_stub(f);
  // Read-your-writes on the follower, and its stream to the leader is open.
  grpc::Status st = grant(lease.get(), kWarm);
  ASSERT_TRUE(st.ok()) << st.error_message();
  std::set<int64_t> ids;
  ASSERT_TRUE(leases_of(lease.get(), &ids).ok());
  EXPECT_EQ(ids.count(kWarm), 1u);

  // Stopped before the grant is sent (see the test above).
  ASSERT_TRUE(cluster.process(old).Pause());
  const absl::Time sent = absl::Now();
  st = grant(lease.get(), kLost);
  std::printf("the grant through the follower was answered after %s: %s\n",
              absl::FormatDuration(absl::Now() - sent).c_str(),
              st.error_message().c_str());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: leader changed");
  cluster.process(old).Signal(SIGCONT);

  // A later write through the follower; once each member, the resumed one
  // included, has applied it, none holds the lost lease.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    etcdserverpb::LeaseRevokeRequest req;
    req.set_id(kWarm);
    etcdserverpb::LeaseRevokeResponse resp;
    st = lease->LeaseRevoke(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  for (int i = 0; i < cluster.size(); ++i) {
    auto stub = lease_stub(i);
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (!leases_of(stub.get(), &ids).ok() || ids.count(kWarm) > 0) {
      ASSERT_LT(absl::Now(), until) << "member " << i;
      absl::SleepFor(absl::Milliseconds(100));
    }
    EXPECT_EQ(ids.count(kLost), 0u) << "member " << i;
  }
}

// A grant or revoke taken by a follower is answered once that follower has
// applied it, which can be before the leader has (the leader tells the
// followers the new commit index before it applies). The client's next
// keep-alive and TimeToLive go to the leader, which must not answer "not
// found" (TTL 0 or -1: an etcd client then stops renewing) for a lease
// whose grant has committed, nor show a revoked lease alive.
TEST(KvClusterTest, LeaseChangedThroughFollower_SeenByTheLeaderAtOnce) {
  LocalCluster cluster(3, "leaseseen");
  uint64_t leader = 0;
  int l = -1;
  ASSERT_NO_FATAL_FAILURE(StartWithLeader(cluster, &leader, &l));
  const int f = (l + 1) % cluster.size();
  auto stub_of = [&](int i) {
    return etcdserverpb::Lease::NewStub(grpc::CreateChannel(
        cluster.member(i).endpoint(), grpc::InsecureChannelCredentials()));
  };
  auto on_follower = stub_of(f);
  auto on_leader = stub_of(l);
  grpc::ClientContext stream_ctx;
  auto keep_alive = on_leader->LeaseKeepAlive(&stream_ctx);
  // Threads that only spin make the members' threads run late and in an
  // order nobody chose, as on a loaded machine, where the follower's apply
  // came first now and then.
  std::atomic<bool> stop_spinning{false};
  std::vector<std::thread> spinners;
  for (int i = 0; i < 3; ++i) {
    spinners.emplace_back([&stop_spinning] {
      while (!stop_spinning.load(std::memory_order_relaxed)) {
      }
    });
  }
  struct Join {
    std::atomic<bool>* stop;
    std::vector<std::thread>* threads;
    ~Join() {
      stop->store(true);
      for (std::thread& t : *threads) t.join();
    }
  } join{&stop_spinning, &spinners};
  constexpr int kGrants = 300;
  int renewed = 0, unknown_to_keep_alive = 0, unknown_to_ttl = 0,
      alive_after_revoke = 0;
  for (int i = 0; i < kGrants; ++i) {
    etcdserverpb::LeaseGrantResponse granted;
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
      etcdserverpb::LeaseGrantRequest req;
      req.set_ttl(60);
      grpc::Status st = on_follower->LeaseGrant(&ctx, req, &granted);
      ASSERT_TRUE(st.ok()) << "grant " << i << ": " << st.error_message();
    }
    // Alternate which call comes first after the grant.
    auto check_keep_alive = [&] {
      etcdserverpb::LeaseKeepAliveRequest req;
      req.set_id(granted.id());
      etcdserverpb::LeaseKeepAliveResponse resp;
      ASSERT_TRUE(keep_alive->Write(req));
      ASSERT_TRUE(keep_alive->Read(&resp));
      EXPECT_EQ(resp.id(), granted.id());
      if (resp.ttl() > 0) {
        ++renewed;
      } else {
        ++unknown_to_keep_alive;
      }
    };
    auto check_ttl = [&] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
      etcdserverpb::LeaseTimeToLiveRequest req;
      req.set_id(granted.id());
      etcdserverpb::LeaseTimeToLiveResponse resp;
      grpc::Status st = on_leader->LeaseTimeToLive(&ctx, req, &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      if (resp.ttl() <= 0) ++unknown_to_ttl;
    };
    if (i % 2 == 0) {
      ASSERT_NO_FATAL_FAILURE(check_keep_alive());
      ASSERT_NO_FATAL_FAILURE(check_ttl());
    } else {
      ASSERT_NO_FATAL_FAILURE(check_ttl());
      ASSERT_NO_FATAL_FAILURE(check_keep_alive());
    }
    // Every other lease is revoked through the follower: the leader's
    // TimeToLive must not show it alive afterwards.
    if (i % 2 == 0) {
      {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
        etcdserverpb::LeaseRevokeRequest req;
        req.set_id(granted.id());
        etcdserverpb::LeaseRevokeResponse resp;
        grpc::Status st = on_follower->LeaseRevoke(&ctx, req, &resp);
        ASSERT_TRUE(st.ok()) << "revoke " << i << ": " << st.error_message();
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
      etcdserverpb::LeaseTimeToLiveRequest req;
      req.set_id(granted.id());
      etcdserverpb::LeaseTimeToLiveResponse resp;
      grpc::Status st = on_leader->LeaseTimeToLive(&ctx, req, &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      if (resp.ttl() != -1) ++alive_after_revoke;
    }
  }
  keep_alive->WritesDone();
  std::printf(
      "%d grants through a follower: %d renewed at once by the "
      "leader, %d unknown to its keep-alive, %d to its TimeToLive; "
      "%d of %d revoked still alive to its TimeToLive\n",
      kGrants, renewed, unknown_to_keep_alive, unknown_to_ttl,
      alive_after_revoke, kGrants / 2);
  EXPECT_EQ(unknown_to_keep_alive, 0);
  EXPECT_EQ(unknown_to_ttl, 0);
  EXPECT_EQ(alive_after_revoke, 0);
}

// The same on the leader's own path for writes that block (lease grants,
// lock and election commands, membership changes): a lease grant sent to
// the leader while both followers are down is appended but cannot commit.
// The leader is paused in turn and the followers restarted: they elect one
// of themselves, whose log lacks the grant. When the old leader resumes
// and applies the new term's entries, the grant is answered "leader
// changed" (before the 7 s request timeout), and no member holds the lease.
TEST(KvClusterTest,
     LeaderDeposed_BlockingWriteFailsAsLeaderChangedNeverApplies) {
  LocalCluster cluster(3, "nextterm");
  uint64_t leader = 0;
  int l = -1;
  ASSERT_NO_FATAL_FAILURE(StartWithLeader(cluster, &leader, &l));
  ASSERT_EQ(
      Etcdctl(cluster.member(l).endpoint(), {"put", "warm", "1"}).exit_code, 0);
  std::vector<int> followers;
  for (int i = 0; i < cluster.size(); ++i) {
    if (i != l) followers.push_back(i);
  }
  for (int i : followers) {
    cluster.process(i).Signal(SIGKILL);
    ASSERT_TRUE(cluster.process(i).Wait(absl::Seconds(10)).ok());
  }
  grpc::Status st;
  absl::Time sent;
  std::thread grant_call([&] {
    auto lease = etcdserverpb::Lease::NewStub(grpc::CreateChannel(
        cluster.member(l).endpoint(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(60));
    etcdserverpb::LeaseGrantRequest grant;
    grant.set_id(4242);  // "1092" in etcdctl's hex
    grant.set_ttl(600);
    etcdserverpb::LeaseGrantResponse granted;
    sent = absl::Now();
    st = lease->LeaseGrant(&ctx, grant, &granted);
  });
  absl::SleepFor(absl::Milliseconds(500));  // appended on the leader
  cluster.process(l).Signal(SIGSTOP);
  for (int i : followers) ASSERT_TRUE(cluster.StartMember(i).ok());
  // The followers elect one of themselves.
  bool elected = false;
  for (int attempt = 0; attempt < 300 && !elected; ++attempt) {
    CommandResult status = Etcdctl(cluster.member(followers[0]).endpoint(),
                                   {"endpoint", "status", "-w", "json"});
    size_t at = status.out.find("\"leader\":");
    elected =
        at != std::string::npos &&
        std::strtoull(status.out.c_str() + at + 9, nullptr, 10) != leader &&
        std::strtoull(status.out.c_str() + at + 9, nullptr, 10) != 0;
    if (!elected) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(elected) << "the resumed followers elected no leader";
  ASSERT_EQ(
      Etcdctl(cluster.member(followers[0]).endpoint(), {"put", "after", "1"})
          .exit_code,
      0);
  cluster.process(l).Signal(SIGCONT);
  grant_call.join();
  std::printf("the lease grant on the old leader was answered after %s: %s\n",
              absl::FormatDuration(absl::Now() - sent).c_str(),
              st.ok() ? "granted" : st.error_message().c_str());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: leader changed");
  for (int i = 0; i < cluster.size(); ++i) {
    CommandResult list;
    for (int attempt = 0; attempt < 100; ++attempt) {
      list = Etcdctl(cluster.member(i).endpoint(), {"lease", "list"});
      if (list.exit_code == 0) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_EQ(list.exit_code, 0) << list.err;
    EXPECT_EQ(list.out.find("1092"), std::string::npos)
        << "member " << i << ": " << list.out;
  }
}

TEST(KvClusterTest, QuorumLost_CallsFailWithNoLeaderBeforeTheirDeadline) {
  LocalCluster cluster(3, "noquorum");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  ASSERT_EQ(Etcdctl(cluster.member(0).endpoint(), {"put", "k", "v"}).exit_code,
            0);
  // A watch open on the survivor.
  auto watch_stub = etcdserverpb::Watch::NewStub(grpc::CreateChannel(
      cluster.member(0).endpoint(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext watch_ctx;
  auto watch = watch_stub->Watch(&watch_ctx);
  etcdserverpb::WatchRequest create;
  create.mutable_create_request()->set_key("k");
  ASSERT_TRUE(watch->Write(create));
  etcdserverpb::WatchResponse created;
  ASSERT_TRUE(watch->Read(&created));
  ASSERT_TRUE(created.created());
  cluster.process(1).Signal(SIGKILL);
  cluster.process(2).Signal(SIGKILL);
  // The survivor loses its leader (a leader steps down when it cannot reach
  // a quorum); after a few election timeouts without one it stops making
  // callers wait: a write and a linearizable read fail with etcd's "no
  // leader" within three election timeouts, before the client's 5 s
  // deadline (the server would otherwise hold the call until then, and the
  // client would see "context deadline exceeded").
  const std::string ep = cluster.member(0).endpoint();
  bool leaderless = false;
  for (int attempt = 0; attempt < 300 && !leaderless; ++attempt) {
    CommandResult st = Etcdctl(ep, {"endpoint", "status", "-w", "json"});
    leaderless =
        st.out.find("\"leader\":") == std::string::npos && st.exit_code == 0;
    if (!leaderless) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(leaderless) << "the survivor still reports a leader";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--command-timeout=5s", "put", "k", "v2"},
        std::vector<std::string>{"--command-timeout=5s", "get", "k"}}) {
    absl::StatusOr<CommandResult> r = RunCommand(
        [&] {
          std::vector<std::string> argv = {"etcdctl", "--endpoints=" + ep};
          argv.insert(argv.end(), args.begin(), args.end());
          return argv;
        }(),
        absl::Seconds(90), {"ETCDCTL_API=3"});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->exit_code, 0);
    EXPECT_NE(r->err.find("etcdserver: no leader"), std::string::npos)
        << r->err;
  }
  // The watch does not hang: the member ends it with "no leader", and the
  // client can resume elsewhere.
  etcdserverpb::WatchResponse ignored;
  while (watch->Read(&ignored)) {
  }
  grpc::Status watch_end = watch->Finish();
  EXPECT_EQ(watch_end.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(watch_end.error_message(), "etcdserver: no leader");
  // A serializable read still answers from local state.
  EXPECT_EQ(
      Etcdctl(ep, {"get", "k", "--consistency=s", "--print-value-only"}).out,
      "v\n");
}

TEST(KvClusterTest, Etcdctl_MoveLeaderAndDefrag) {
  LocalCluster cluster(3, "moveleader");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  uint64_t leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_NE(leader, 0u);
  int li = cluster.MemberIndexOf(leader);
  int target = (li + 1) % 3;
  CommandResult list = Etcdctl(cluster.member(target).endpoint(),
                               {"endpoint", "status", "-w", "json"});
  size_t at = list.out.find("\"member_id\":");
  ASSERT_NE(at, std::string::npos) << list.out;
  uint64_t target_id = std::strtoull(list.out.c_str() + at + 12, nullptr, 10);
  CommandResult move = Etcdctl(
      cluster.endpoints(), {"move-leader", absl::StrFormat("%x", target_id)});
  ASSERT_EQ(move.exit_code, 0) << move.err;
  EXPECT_NE(move.out.find("Leadership transferred"), std::string::npos)
      << move.out;
  EXPECT_EQ(cluster.WaitForLeader(absl::Seconds(10)), target_id);
  // Writes keep working under the new leader; defragmenting does not stop
  // them.
  ASSERT_EQ(Etcdctl(cluster.endpoints(), {"put", "after-move", "1"}).exit_code,
            0);
  CommandResult defrag = Etcdctl(cluster.endpoints(), {"defrag"});
  EXPECT_EQ(defrag.exit_code, 0) << defrag.err;
  EXPECT_EQ(
      Etcdctl(cluster.endpoints(), {"get", "after-move", "--print-value-only"})
          .out,
      "1\n");
}

}  // namespace
}  // namespace lockd::testing
