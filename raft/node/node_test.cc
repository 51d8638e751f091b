// RaftNode start-up against a state machine that is ahead of, or behind,
// the raft log (the two sides of a snapshot install's crash window), and
// log compaction, and proposals on a single-member cluster.
#include "raft/node/node.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "lockd/util/clock.h"

namespace lockd::raft {
namespace {

class CountingMachine : public StateMachine {
 public:
  explicit CountingMachine(uint64_t applied) : applied_(applied) {}
  uint64_t AppliedIndex() const override { return applied_.load(); }
  absl::Status Apply(const std::vector<Entry>& entries) override {
    for (const Entry& e : entries) {
      if (hold != nullptr && e.data == "hold") {
        holding.Notify();
        hold->WaitForNotification();
      }
    }
    // Skips what it holds, as the real state machine does.
    if (entries.back().index > applied_.load()) {
      applied_ = entries.back().index;
    }
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    syncs.fetch_add(1);
    return absl::OkStatus();
  }
  std::atomic<int> syncs{0};
  // When set, applying an entry "hold" stops the node's loop (after
  // notifying `holding`) until `hold` is notified.
  absl::Notification* hold = nullptr;
  absl::Notification holding;

 private:
  std::atomic<uint64_t> applied_;
};

class NoPeers : public MessageHandler {
 public:
  absl::Status CheckPeer(uint64_t) override { return absl::OkStatus(); }
  void Deliver(std::vector<Message>) override {}
};

std::string Dir(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
}

// A one-voter log with `n` committed normal entries after the bootstrap.
std::unique_ptr<DiskStorage> OneVoterLog(const std::string& dir, uint64_t n) {
  auto log = DiskStorage::Open(dir);
  EXPECT_TRUE(log.ok()) << log.status();
  auto image = MakeBootstrapImage({1});
  EXPECT_TRUE(image.ok());
  EXPECT_TRUE((*log)->SetInitialConfState(image->conf_state).ok());
  std::vector<Entry> entries = image->entries;
  HardState hs = image->hard_state;
  for (uint64_t i = 0; i < n; ++i) {
    Entry e;
    e.index = entries.back().index + 1;
    e.term = 1;
    e.data = "x";
    entries.push_back(e);
  }
  hs.commit = entries.back().index;
  EXPECT_TRUE((*log)->Save(hs, entries, Snapshot(), true).ok());
  return *std::move(log);
}

TEST(RaftNodeTest, Create_stateMachineAheadOfTheLog_startsFromTheCommitIndex) {
  std::unique_ptr<DiskStorage> log = OneVoterLog(Dir("ahead"), 10);
  const uint64_t commit = log->LastIndex();
  CountingMachine sm(commit + 500);  // installed a snapshot, then crashed
  NoPeers handler;
  Transport transport(TransportOptions(), &handler);
  NodeOptions o;
  o.id = 1;
  auto node = RaftNode::Create(o, log.get(), &transport, &sm);
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ((*node)->applied_index(), commit);
}

TEST(RaftNodeTest, Create_stateMachineBehindTheLogStart_isDataLoss) {
  std::unique_ptr<DiskStorage> log = OneVoterLog(Dir("behind"), 100);
  ConfState cs;
  cs.voters = {1};
  ASSERT_TRUE(log->CreateSnapshot(90, cs, "", 5).ok());
  ASSERT_EQ(log->FirstIndex(), 86u);
  NoPeers handler;
  Transport transport(TransportOptions(), &handler);
  NodeOptions o;
  o.id = 1;
  CountingMachine lost(10);
  auto node = RaftNode::Create(o, log.get(), &transport, &lost);
  EXPECT_EQ(node.status().code(), absl::StatusCode::kDataLoss) << node.status();
  // Exactly at the log's start is fine.
  CountingMachine edge(85);
  EXPECT_TRUE(RaftNode::Create(o, log.get(), &transport, &edge).ok());
}

// A one-voter cluster on a fresh log in Dir(name), ticking every 10 ms,
// started and leading.
class LeadingNode {
 public:
  LeadingNode(const std::string& name, NodeOptions o)
      : transport_(TransportOptions(), &handler_) {
    auto log = DiskStorage::Open(Dir(name));
    EXPECT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    o.id = 1;
    o.tick_interval = absl::Milliseconds(10);
    o.bootstrap_voters = {1};
    auto node = RaftNode::Create(o, log_.get(), &transport_, &sm_);
    EXPECT_TRUE(node.ok()) << node.status();
    node_ = *std::move(node);
    node_->Start();
    EXPECT_TRUE(node_->WaitForLeader(MonotonicNow() + absl::Seconds(10)).ok());
  }
  DiskStorage* log() { return log_.get(); }
  RaftNode* node() { return node_.get(); }
  CountingMachine& machine() { return sm_; }

 private:
  std::unique_ptr<DiskStorage> log_;
  CountingMachine sm_{0};
  NoPeers handler_;
  Transport transport_;
  std::unique_ptr<RaftNode> node_;
};

TEST(RaftNodeTest, Run_compactsTheLogEverySnapshotCountEntries) {
  NodeOptions o;
  o.snapshot_count = 10;
  o.snapshot_catchup_entries = 4;
  LeadingNode leading("compact", o);
  RaftNode* node = leading.node();
  DiskStorage* log = leading.log();
  CountingMachine& sm = leading.machine();
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(node->Propose("x", MonotonicNow() + absl::Seconds(5)).ok());
  }
  ASSERT_TRUE(node->WaitApplied(node->commit_index(),
                                MonotonicNow() + absl::Seconds(10))
                  .ok());
  const uint64_t applied = node->applied_index();
  node->Stop();
  EXPECT_GE(node->log_compactions(), 4u);
  EXPECT_GE(sm.syncs.load(), 4);  // the store is durable before each
  absl::StatusOr<Snapshot> snap = log->GetSnapshot();
  ASSERT_TRUE(snap.ok());
  // The newest snapshot is at most snapshot_count behind, and the log
  // keeps snapshot_catchup_entries before it.
  EXPECT_GT(snap->metadata.index + 10, applied);
  EXPECT_EQ(log->FirstIndex(), snap->metadata.index - 4 + 1);
  EXPECT_EQ(snap->metadata.conf_state.voters, std::vector<uint64_t>{1});
}

// A proposal bound to a term is appended only in that term.
TEST(RaftNodeTest, ProposeAsync_inAnotherTerm_isRefusedNotAppended) {
  LeadingNode leading("term", NodeOptions());
  RaftNode* node = leading.node();
  DiskStorage* log = leading.log();
  const uint64_t term = node->term();
  ASSERT_GT(term, 0u);
  absl::Notification stale_done, current_done;
  absl::Status stale, current;
  node->ProposeAsync(
      "old",
      [&](absl::Status s) {
        stale = s;
        stale_done.Notify();
      },
      term - 1);
  ASSERT_TRUE(stale_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(stale.code(), absl::StatusCode::kUnavailable) << stale;
  // The blocking forms refuse alike.
  EXPECT_EQ(
      node->Propose("old", MonotonicNow() + absl::Seconds(5), term + 1).code(),
      absl::StatusCode::kUnavailable);
  ConfChange cc;
  cc.changes.push_back(ConfChangeSingle{ConfChangeType::kAddLearnerNode, 2});
  EXPECT_EQ(
      node->ProposeConfChange(cc, MonotonicNow() + absl::Seconds(5), term - 1)
          .code(),
      absl::StatusCode::kUnavailable);
  node->ProposeAsync(
      "now",
      [&](absl::Status s) {
        current = s;
        current_done.Notify();
      },
      term);
  ASSERT_TRUE(current_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(current.ok()) << current;
  ASSERT_TRUE(node->WaitApplied(node->commit_index(),
                                MonotonicNow() + absl::Seconds(10))
                  .ok());
  node->Stop();
  // Only the current term's proposal reached the log.
  auto entries =
      log->Entries(log->FirstIndex(), log->LastIndex() + 1, kNoLimit);
  ASSERT_TRUE(entries.ok()) << entries.status();
  int now = 0, conf_changes = 0;
  for (const Entry& e : *entries) {
    EXPECT_NE(e.data, "old") << "index " << e.index;
    if (e.type == EntryType::kConfChange) ++conf_changes;
    if (e.data == "now") {
      ++now;
      EXPECT_EQ(e.term, term);
    }
  }
  EXPECT_EQ(now, 1);
  EXPECT_EQ(conf_changes, 1);  // the bootstrap's only
}

// Proposals that queue up while the loop is busy are proposed together:
// appended in the order they came, the ones bound to an ended term left out.
TEST(RaftNodeTest, ProposeAsync_queuedTogether_areAppendedInOrder) {
  LeadingNode leading("batch", NodeOptions());
  RaftNode* node = leading.node();
  const uint64_t term = node->term();
  ASSERT_GT(term, 0u);
  absl::Notification release;
  leading.machine().hold = &release;
  node->ProposeAsync(
      "hold", [](absl::Status) {}, term);
  ASSERT_TRUE(leading.machine().holding.WaitForNotificationWithTimeout(
      absl::Seconds(10)));

  constexpr int kProposals = 10;
  constexpr int kStale = 5;
  absl::Mutex mu;
  std::vector<absl::Status> results(kProposals, absl::UnknownError("pending"));
  int done = 0;
  for (int i = 0; i < kProposals; ++i) {
    node->ProposeAsync(
        absl::StrCat("p", i),
        [&, i](absl::Status s) {
          absl::MutexLock lock(&mu);
          results[i] = s;
          ++done;
        },
        i == kStale ? term - 1 : term);
  }
  release.Notify();
  {
    absl::MutexLock lock(&mu);
    auto all_done = [&] { return done == kProposals; };
    ASSERT_TRUE(
        mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(10)));
  }
  for (int i = 0; i < kProposals; ++i) {
    if (i == kStale) {
      EXPECT_EQ(results[i].code(), absl::StatusCode::kUnavailable) << i;
    } else {
      EXPECT_TRUE(results[i].ok()) << i << ": " << results[i];
    }
  }
  ASSERT_TRUE(node->WaitApplied(node->commit_index(),
                                MonotonicNow() + absl::Seconds(10))
                  .ok());
  node->Stop();
  DiskStorage* log = leading.log();
  auto entries =
      log->Entries(log->FirstIndex(), log->LastIndex() + 1, kNoLimit);
  ASSERT_TRUE(entries.ok()) << entries.status();
  std::vector<std::string> proposed;
  uint64_t last_index = 0;
  for (const Entry& e : *entries) {
    if (e.data.empty() || e.data[0] != 'p') continue;
    proposed.push_back(e.data);
    EXPECT_EQ(e.term, term);
    if (last_index != 0) EXPECT_EQ(e.index, last_index + 1) << e.data;
    last_index = e.index;
  }
  std::vector<std::string> want;
  for (int i = 0; i < kProposals; ++i) {
    if (i != kStale) want.push_back(absl::StrCat("p", i));
  }
  EXPECT_EQ(proposed, want);
}

}  // namespace
}  // namespace lockd::raft
