// Disaster recovery as an etcd operator does it: save a snapshot of one
// member of a 3-member cluster, restore it into three new data directories
// for a new cluster, start that, and find the same keys, history, leases and
// hash, with the new cluster's members only. Bad restores change nothing.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// The number after `"field":` in one line of JSON, -1 if none.
int64_t JsonNumber(const std::string& json, const std::string& field) {
  const std::string marker = "\"" + field + "\":";
  size_t at = json.find(marker);
  if (at == std::string::npos) return -1;
  at += marker.size();
  size_t end = json.find_first_not_of("0123456789", at);
  int64_t v = -1;
  if (!absl::SimpleAtoi(json.substr(at, end - at), &v)) return -1;
  return v;
}

TEST(SnapshotRestoreTest, RestoredClusterHasTheDataAndOnlyItsOwnMembers) {
  LocalCluster source(3, "snapsrc");
  ASSERT_TRUE(source.StartAll().ok());
  ASSERT_NE(source.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string src = source.endpoints();
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(Etcdctl(src, {"put", absl::StrCat("k", i), absl::StrCat("v", i)})
                  .exit_code,
              0);
  }
  ASSERT_EQ(Etcdctl(src, {"put", "k0", "v0-again"}).exit_code, 0);
  ASSERT_EQ(Etcdctl(src, {"del", "k1"}).exit_code, 0);
  CommandResult grant = Etcdctl(src, {"lease", "grant", "600", "-w", "json"});
  const int64_t lease = JsonNumber(grant.out, "ID");
  ASSERT_GT(lease, 0) << grant.out;
  const std::string lease_hex = absl::StrCat(absl::Hex(lease));
  ASSERT_EQ(
      Etcdctl(src, {"put", "leased", "x", "--lease=" + lease_hex}).exit_code,
      0);
  ASSERT_EQ(Etcdctl(src, {"compaction", "5"}).exit_code, 0);
  const std::string keys_before =
      Etcdctl(src, {"get", "", "--from-key", "-w", "json"}).out;

  const std::string snap = TempDir("snapfiles") + "/backup.snap";
  CommandResult save =
      Lockctl(source.member(1).endpoint(), {"snapshot", "save", snap});
  ASSERT_EQ(save.exit_code, 0) << save.err;
  CommandResult status =
      Lockctl("", {"snapshot", "status", snap, "-w", "json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const int64_t revision = JsonNumber(status.out, "revision");
  const int64_t hash = JsonNumber(status.out, "hash");
  EXPECT_EQ(JsonNumber(status.out, "totalKey"), 20) << status.out;
  EXPECT_EQ(revision, 24) << status.out;  // 21 puts, a delete, the leased put
  // The file's hash is HashKV's at its revision: compare with the members.
  CommandResult hashkv = Etcdctl(src, {"endpoint", "hashkv", "-w", "json",
                                       absl::StrCat("--rev=", revision)});
  EXPECT_NE(hashkv.out.find(absl::StrCat("\"hash\":", hash)), std::string::npos)
      << hashkv.out << " vs " << status.out;
  for (int i = 0; i < 3; ++i) source.StopMember(i);

  // Restore into the (empty) data directories of a new cluster.
  LocalCluster restored(3, "snapdst");
  for (int i = 0; i < 3; ++i) {
    CommandResult r = Lockctl(
        "", {"snapshot", "restore", snap, "--name=" + restored.member(i).name,
             "--data-dir=" + restored.member(i).data_dir,
             "--initial-cluster=" + restored.initial_cluster(),
             "--initial-cluster-token=restored-cluster",
             "--initial-advertise-peer-urls=" + restored.member(i).peer_url()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(absl::StrCat("at revision ", revision, " (20 keys)")),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.err.find("Restoring snapshot"), std::string::npos) << r.err;
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(restored.StartMember(i).ok());
  ASSERT_NE(restored.WaitForLeader(absl::Seconds(30)), 0u);
  ASSERT_TRUE(restored.WaitForPublished(absl::Seconds(30)));
  const std::string dst = restored.endpoints();

  // Only the new members, with their names.
  CommandResult members = Etcdctl(dst, {"member", "list"});
  ASSERT_EQ(members.exit_code, 0) << members.err;
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(members.out.find(restored.member(i).peer_url()),
              std::string::npos)
        << members.out;
    EXPECT_EQ(members.out.find(source.member(i).peer_url()), std::string::npos)
        << members.out;
  }
  // The same keys at the same revisions, on every member.
  for (int i = 0; i < 3; ++i) {
    CommandResult get = Etcdctl(restored.member(i).endpoint(),
                                {"get", "", "--from-key", "-w", "json"});
    // The header differs (cluster and member IDs); the keys must not.
    EXPECT_EQ(get.out.substr(get.out.find("\"kvs\"")),
              keys_before.substr(keys_before.find("\"kvs\"")));
  }
  CommandResult hashkv_after = Etcdctl(dst, {"endpoint", "hashkv", "-w", "json",
                                             absl::StrCat("--rev=", revision)});
  EXPECT_EQ(hashkv_after.exit_code, 0) << hashkv_after.err;
  size_t n = 0;
  for (size_t at = 0;
       (at = hashkv_after.out.find(absl::StrCat("\"hash\":", hash), at)) !=
       std::string::npos;
       ++at) {
    ++n;
  }
  EXPECT_EQ(n, 3u) << hashkv_after.out;
  // History below the compaction stays compacted; above it, it is there.
  CommandResult old = Etcdctl(dst, {"get", "k0", "--rev=4"});
  EXPECT_NE(old.err.find("required revision has been compacted"),
            std::string::npos)
      << old.err;
  EXPECT_EQ(Etcdctl(dst, {"get", "k1", "--rev=10"}).out, "k1\nv1\n");
  // The lease survives, with its keys, and can be revoked.
  CommandResult ttl =
      Etcdctl(dst, {"lease", "timetolive", lease_hex, "--keys"});
  EXPECT_NE(ttl.out.find("attached keys([leased])"), std::string::npos)
      << ttl.out << ttl.err;
  // New writes continue the revisions.
  CommandResult put = Etcdctl(dst, {"put", "after", "1", "-w", "json"});
  EXPECT_EQ(JsonNumber(put.out, "revision"), revision + 1) << put.out;
  EXPECT_EQ(Etcdctl(dst, {"lease", "revoke", lease_hex}).exit_code, 0);
  EXPECT_EQ(Etcdctl(dst, {"get", "leased"}).out, "");
}

TEST(SnapshotRestoreTest, BadRestoresChangeNothing) {
  LocalCluster source(1, "snapbad");
  ASSERT_TRUE(source.StartAll().ok());
  ASSERT_NE(source.WaitForLeader(absl::Seconds(30)), 0u);
  ASSERT_EQ(Etcdctl(source.endpoints(), {"put", "a", "1"}).exit_code, 0);
  const std::string files = TempDir("snapbadfiles");
  const std::string snap = files + "/good.snap";
  ASSERT_EQ(Lockctl(source.endpoints(), {"snapshot", "save", snap}).exit_code,
            0);
  const std::string cluster_flags = "--initial-cluster=x=http://127.0.0.1:1";
  auto restore = [&](const std::string& file, const std::string& dir,
                     const std::string& name) {
    return Lockctl("", {"snapshot", "restore", file, "--name=" + name,
                        "--data-dir=" + dir, cluster_flags,
                        "--initial-advertise-peer-urls=http://127.0.0.1:1"});
  };

  // A damaged copy: one byte flipped in the middle.
  std::ifstream in(snap, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 1024u);
  bytes[bytes.size() / 2] ^= 0x01;
  const std::string damaged = files + "/damaged.snap";
  std::ofstream(damaged, std::ios::binary) << bytes;
  const std::string dir = files + "/x.lockd";
  CommandResult bad = restore(damaged, dir, "x");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("is damaged or not a lockd snapshot"),
            std::string::npos)
      << bad.err;
  EXPECT_FALSE(Exists(dir)) << "a failed restore left " << dir;

  // No such file; a name not in --initial-cluster (etcd's wording).
  CommandResult missing = restore(files + "/nope.snap", dir, "x");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("cannot open snapshot"), std::string::npos)
      << missing.err;
  CommandResult stranger = restore(snap, dir, "y");
  EXPECT_EQ(stranger.exit_code, 1);
  EXPECT_NE(stranger.err.find(
                "couldn't find local name \"y\" in the initial cluster"),
            std::string::npos)
      << stranger.err;
  EXPECT_FALSE(Exists(dir));

  // A good restore, then the same again: refused, the first one intact.
  CommandResult good = restore(snap, dir, "x");
  ASSERT_EQ(good.exit_code, 0) << good.err;
  EXPECT_NE(good.out.find("Start it with: lockd --name=x --data-dir=" + dir),
            std::string::npos)
      << good.out;
  CommandResult again = restore(snap, dir, "x");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("exists and is not empty"), std::string::npos)
      << again.err;
  EXPECT_TRUE(Exists(dir + "/member/identity"));
  EXPECT_FALSE(Exists(dir + "/member.restoring"));

  // status: etcdctl's simple and table shapes; damaged files refused.
  CommandResult simple = Lockctl("", {"snapshot", "status", snap});
  EXPECT_EQ(simple.exit_code, 0) << simple.err;
  EXPECT_NE(simple.out.find(", 2, 1, "), std::string::npos) << simple.out;
  CommandResult table =
      Lockctl("", {"snapshot", "status", snap, "-w", "table"});
  EXPECT_NE(table.out.find("TOTAL KEYS"), std::string::npos) << table.out;
  // etcdctl's snapshot save of a lockd member writes a lockd snapshot of
  // the same data: same hash, revision and key count. Its size may differ
  // by the RocksDB files the member flushed or rewrote between the saves.
  const std::string by_etcdctl = files + "/etcdctl.snap";
  ASSERT_EQ(
      Etcdctl(source.endpoints(), {"snapshot", "save", by_etcdctl}).exit_code,
      0);
  auto without_size = [](const std::string& line) {
    return line.substr(0, line.rfind(", "));
  };
  CommandResult etcdctl_status =
      Lockctl("", {"snapshot", "status", by_etcdctl});
  EXPECT_EQ(etcdctl_status.exit_code, 0) << etcdctl_status.err;
  EXPECT_EQ(without_size(etcdctl_status.out), without_size(simple.out));
  CommandResult bad_status = Lockctl("", {"snapshot", "status", damaged});
  EXPECT_EQ(bad_status.exit_code, 1);
  EXPECT_NE(bad_status.err.find("damaged"), std::string::npos)
      << bad_status.err;
}

}  // namespace
}  // namespace lockd::testing
