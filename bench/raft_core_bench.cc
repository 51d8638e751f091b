// Throughput of the Raft core alone: an in-memory 3-node cluster (no I/O, no
// network), 256-byte entries proposed in batches, every Ready handled the
// way raft/node will (persist to storage, send, apply, advance). Reports
// committed entries per second (items_per_second) and heap allocations per
// committed entry (allocs_per_entry), counted by the operator new below.
//
//   bazel run --config=opt //bench:raft_core_bench
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "raft/core/raw_node.h"
#include "raft/core/storage.h"

namespace {
std::atomic<uint64_t> g_allocs{0};
}  // namespace

// Counting allocator. GCC warns that free() pairs with a "mismatched"
// allocation once operator new is inlined as malloc; the pairing is ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace lockd::raft {
namespace {

constexpr size_t kEntryBytes = 256;

struct BenchNode {
  MemoryStorage storage;
  std::unique_ptr<RawNode> raw;
  uint64_t applied = 0;
};

class BenchCluster {
 public:
  BenchCluster() {
    for (uint64_t id = 1; id <= 3; ++id) {
      auto n = std::make_unique<BenchNode>();
      if (!BootstrapStorage(&n->storage, {1, 2, 3}).ok()) std::abort();
      Config c;
      c.id = id;
      c.storage = &n->storage;
      c.seed = id;
      c.max_size_per_msg_bytes = 1 << 20;
      c.max_inflight_msgs = 256;
      c.check_invariants = false;
      n->raw = *RawNode::Create(c);
      nodes_.push_back(std::move(n));
    }
    Round();
    if (!nodes_[0]->raw->Campaign().ok()) std::abort();
    for (int i = 0; i < 10; ++i) Round();
    if (nodes_[0]->raw->raft().state() != StateType::kLeader) std::abort();
  }

  RawNode& leader() { return *nodes_[0]->raw; }
  uint64_t leader_applied() const { return nodes_[0]->applied; }

  // Every node handles one Ready; then all messages are delivered.
  void Round() {
    for (auto& n : nodes_) {
      if (!n->raw->HasReady()) continue;
      Ready rd = n->raw->GetReady();
      if (!rd.snapshot.IsEmpty()) (void)n->storage.ApplySnapshot(rd.snapshot);
      if (!rd.entries.empty()) (void)n->storage.Append(std::move(rd.entries));
      if (!rd.hard_state.IsEmpty()) n->storage.SetHardState(rd.hard_state);
      for (Message& m : rd.messages) outbox_.push_back(std::move(m));
      if (!rd.committed_entries.empty()) {
        n->applied = rd.committed_entries.back().index;
      }
      n->raw->Advance(rd);
      MaybeCompact(*n);
    }
    std::vector<Message> msgs;
    msgs.swap(outbox_);
    for (Message& m : msgs) (void)nodes_[m.to - 1]->raw->Step(std::move(m));
  }

 private:
  // Keeps memory bounded in long runs, like the application's snapshots.
  void MaybeCompact(BenchNode& n) {
    const uint64_t first = n.storage.FirstIndex();
    if (n.applied > first + 200000) {
      (void)n.storage.CreateSnapshot(n.applied - 1000, nullptr, "");
      (void)n.storage.Compact(n.applied - 1000);
    }
  }

  std::vector<std::unique_ptr<BenchNode>> nodes_;
  std::vector<Message> outbox_;
};

void BM_CommitThroughput(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0));
  BenchCluster c;
  const std::string payload(kEntryBytes, 'x');
  const uint64_t start_applied = c.leader_applied();
  uint64_t allocs = 0;
  for (auto _ : state) {
    const uint64_t a0 = g_allocs.load(std::memory_order_relaxed);
    std::vector<std::string> data(batch, payload);
    if (!c.leader().ProposeBatch(std::move(data)).ok()) std::abort();
    // One round per batch: batches pipeline through the inflight window.
    c.Round();
    allocs += g_allocs.load(std::memory_order_relaxed) - a0;
  }
  for (int i = 0; i < 5; ++i) c.Round();
  const uint64_t committed = c.leader_applied() - start_applied;
  state.SetItemsProcessed(static_cast<int64_t>(committed));
  state.counters["allocs_per_entry"] =
      committed == 0 ? 0.0 : static_cast<double>(allocs) / committed;
  state.counters["entry_bytes"] = kEntryBytes;
}
BENCHMARK(BM_CommitThroughput)->Arg(1)->Arg(16)->Arg(64)->Arg(256);

}  // namespace
}  // namespace lockd::raft

BENCHMARK_MAIN();
