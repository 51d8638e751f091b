// A synchronous in-memory cluster of RawNodes for unit and golden tests.
// Messages are queued, never sent implicitly: tests choose what to deliver,
// drop or partition, so every schedule is explicit and deterministic.
#ifndef LOCKD_RAFT_CORE_TEST_CLUSTER_H_
#define LOCKD_RAFT_CORE_TEST_CLUSTER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "raft/core/raw_node.h"
#include "raft/core/storage.h"
#include "raft/core/types.h"

namespace lockd::raft::testing {

class Cluster {
 public:
  struct Node {
    std::unique_ptr<MemoryStorage> storage;
    std::unique_ptr<RawNode> raw;
    std::vector<Entry> applied;  // application log (normal entries)
    std::vector<ReadState> read_states;
    ConfState conf;
  };

  // `tweak` may adjust each node's config (election ticks, limits...).
  explicit Cluster(std::function<void(Config*)> tweak = nullptr)
      : tweak_(std::move(tweak)) {}

  // Bootstraps `voters` (e.g. {1,2,3}) as a new cluster.
  void Bootstrap(const std::vector<uint64_t>& voters);
  // Adds an empty node (to be added by a conf change).
  void AddEmptyNode(uint64_t id);
  // Restarts a node from its storage, losing volatile state.
  void Restart(uint64_t id);

  Node& node(uint64_t id) { return nodes_.at(id); }
  RawNode& raw(uint64_t id) { return *nodes_.at(id).raw; }
  const Raft& raft(uint64_t id) { return nodes_.at(id).raw->raft(); }
  std::vector<uint64_t> ids() const;

  // Handles one Ready of `id` (persist, queue messages, apply). Returns
  // false if there was none. Appends a description to *out if non-null.
  bool ProcessReady(uint64_t id, std::vector<std::string>* out = nullptr);
  // Delivers every queued message addressed to `to` (0: all); returns the
  // number delivered. Dropped links discard messages.
  int Deliver(uint64_t to = 0, std::vector<std::string>* out = nullptr);
  // Processes Readys and delivers messages until nothing changes.
  void Stabilize(std::vector<std::string>* out = nullptr);
  // Like Stabilize, but gives up after `rounds` rounds; returns whether it
  // settled.
  bool StabilizeBounded(int rounds);
  // Ticks a node n times (processing nothing).
  void Tick(uint64_t id, int n = 1);
  // Ticks until the node campaigns (a pre-vote/vote request is queued) or
  // `max` ticks elapse.
  void Elect(uint64_t id);

  // Network faults.
  void Isolate(uint64_t id);
  void Cut(uint64_t from, uint64_t to) { cut_.insert({from, to}); }
  void Heal() { cut_.clear(); }
  void DropPending() { queue_.clear(); }
  std::vector<Message>& queue() { return queue_; }

  // The current leader (by lowest id among leaders of the highest term),
  // 0 if none.
  uint64_t Leader();

 private:
  std::function<void(Config*)> tweak_;
  std::map<uint64_t, Node> nodes_;
  std::vector<Message> queue_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
};

}  // namespace lockd::raft::testing

#endif  // LOCKD_RAFT_CORE_TEST_CLUSTER_H_
