// Log compaction and snapshot install through real raft nodes, in one
// process: three members (RaftNode + DiskStorage + gRPC Transport +
// KvStateMachine + StoreSnapshotIo, each with its own directories), one of
// which starts only after the others compacted their logs past it.
#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lockd/server/kv_state_machine.h"
#include "lockd/server/snapshot_io.h"
#include "lockd/util/clock.h"
#include "raft/node/node.h"
#include "raft/storage/disk_storage.h"
#include "raft/transport/transport.h"

namespace lockd {
namespace {

bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = MonotonicNow() + timeout;
  while (MonotonicNow() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

class Relay : public raft::MessageHandler {
 public:
  std::atomic<raft::RaftNode*> node{nullptr};
  absl::Status CheckPeer(uint64_t) override { return absl::OkStatus(); }
  void Deliver(std::vector<raft::Message> messages) override {
    if (raft::RaftNode* n = node.load()) n->Deliver(std::move(messages));
  }
};

struct Member {
  // Opens (or reopens) member `id` in `dir`, listening on `port` (0: pick).
  Member(uint64_t id, const std::string& dir, int port) {
    mkdir(dir.c_str(), 0700);
    store = *kv::MvccStore::Open(dir + "/kv");
    log = *raft::DiskStorage::Open(dir + "/raft");
    sm = std::make_unique<KvStateMachine>(id, store.get());
    io = std::make_unique<StoreSnapshotIo>(dir + "/snap", store.get());
    sm->SetSnapshotDir(io->dir());
    sm->AddRestoreListener([this] { restores.fetch_add(1); });
    raft::TransportOptions topts;
    topts.cluster_id = 5;
    topts.self_id = id;
    topts.backoff_min = absl::Milliseconds(10);
    topts.backoff_max = absl::Milliseconds(200);
    transport = std::make_unique<raft::Transport>(topts, &relay, io.get());
    grpc::ServerBuilder b;
    b.AddListeningPort(absl::StrCat("127.0.0.1:", port),
                       grpc::InsecureServerCredentials(), &bound_port);
    b.RegisterService(transport->service());
    server = b.BuildAndStart();
    raft::NodeOptions nopts;
    nopts.id = id;
    nopts.tick_interval = absl::Milliseconds(20);
    nopts.election_tick = 10;
    nopts.seed = id;
    nopts.bootstrap_voters = {1, 2, 3};
    nopts.snapshot_count = 20;
    nopts.snapshot_catchup_entries = 5;
    node = *raft::RaftNode::Create(nopts, log.get(), transport.get(), sm.get());
    relay.node = node.get();
  }
  ~Member() {
    transport->Stop();
    server->Shutdown(std::chrono::system_clock::now());
    node->Stop();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", bound_port); }

  std::unique_ptr<kv::MvccStore> store;
  std::unique_ptr<raft::DiskStorage> log;
  std::unique_ptr<KvStateMachine> sm;
  std::unique_ptr<StoreSnapshotIo> io;
  Relay relay;
  std::unique_ptr<raft::Transport> transport;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<raft::RaftNode> node;
  int bound_port = 0;
  std::atomic<int> restores{0};
};

std::string PutCommand(uint64_t id, const std::string& key) {
  internal::Request req;
  req.set_version(1);
  req.set_origin_member(0);
  req.set_id(id);
  req.mutable_put()->set_key(key);
  req.mutable_put()->set_value("value-of-" + key);
  return req.SerializeAsString();
}

TEST(SnapshotInstallTest, MemberBehindCompactedLogs_InstallsLeadersStore) {
  const std::string root = std::getenv("TEST_TMPDIR");
  // Member 3's port is reserved by starting it once, so the others know
  // where to find it; it then stays down while they write.
  auto m3 = std::make_unique<Member>(3, root + "/m3", 0);
  const int port3 = m3->bound_port;
  const std::string addr3 = m3->address();
  m3.reset();
  Member m1(1, root + "/m1", 0), m2(2, root + "/m2", 0);
  m1.transport->AddPeer(2, m2.address());
  m1.transport->AddPeer(3, addr3);
  m2.transport->AddPeer(1, m1.address());
  m2.transport->AddPeer(3, addr3);
  m1.node->Start();
  m2.node->Start();
  raft::RaftNode* leader = nullptr;
  ASSERT_TRUE(Eventually(
      [&] {
        leader = m1.node->is_leader()   ? m1.node.get()
                 : m2.node->is_leader() ? m2.node.get()
                                        : nullptr;
        return leader != nullptr;
      },
      absl::Seconds(20)));
  constexpr int kWrites = 200;
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(leader
                    ->Propose(PutCommand(i, absl::StrFormat("k%04d", i)),
                              MonotonicNow() + absl::Seconds(5))
                    .ok());
  }
  ASSERT_TRUE(leader
                  ->WaitApplied(leader->commit_index(),
                                MonotonicNow() + absl::Seconds(10))
                  .ok());
  // Each compaction keeps only the last 5 entries, so after one the log no
  // longer reaches back to where member 3 stopped. (How many there are
  // depends on how the writes were batched: 2 in an optimized build, more
  // in a debug one.)
  EXPECT_GE(m1.node->log_compactions(), 1u);
  EXPECT_GE(m2.node->log_compactions(), 1u);

  m3 = std::make_unique<Member>(3, root + "/m3", port3);
  m3->transport->AddPeer(1, m1.address());
  m3->transport->AddPeer(2, m2.address());
  m3->node->Start();
  ASSERT_TRUE(Eventually([&] { return m3->node->snapshots_installed() > 0; },
                         absl::Seconds(30)));
  EXPECT_EQ(m3->node->snapshots_installed(), 1u);
  EXPECT_EQ(m3->restores.load(), 1);
  EXPECT_EQ(m3->store->restores(), 1u);
  EXPECT_EQ(m3->transport->snapshot_stats().received, 1u);
  EXPECT_GE(
      m1.transport->snapshot_stats().sent + m2.transport->snapshot_stats().sent,
      1u);
  // Same data as the leader.
  ASSERT_TRUE(
      Eventually([&] { return m3->store->revision() == m1.store->revision(); },
                 absl::Seconds(10)));
  auto h1 = m1.store->HashKV(0);
  auto h3 = m3->store->HashKV(0);
  ASSERT_TRUE(h1.ok() && h3.ok());
  EXPECT_EQ(h1->hash, h3->hash);
  EXPECT_EQ(h1->revision, kWrites + 1);

  // It keeps following the log afterwards, and the staging area is empty.
  ASSERT_TRUE(
      leader
          ->Propose(PutCommand(999, "after"), MonotonicNow() + absl::Seconds(5))
          .ok());
  ASSERT_TRUE(Eventually([&] { return m3->store->revision() == kWrites + 2; },
                         absl::Seconds(10)));
  EXPECT_TRUE(Eventually(
      [&] {
        DIR* d = opendir((root + "/m3/snap").c_str());
        int entries = 0;
        while (struct dirent* e = readdir(d)) entries += e->d_name[0] != '.';
        closedir(d);
        return entries == 0;
      },
      absl::Seconds(5)));
  // The logs (read once their nodes stopped): compacted far past member 3's
  // bootstrap entries; member 3's holds the snapshot and what followed.
  m1.node->Stop();
  m3->node->Stop();
  EXPECT_GT(m1.log->FirstIndex(), 150u);
  EXPECT_GT(m3->log->FirstIndex(), 150u);
}

}  // namespace
}  // namespace lockd
