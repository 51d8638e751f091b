// A deterministic simulator for the Raft core. One seed derives a whole run:
// a 3-7 node cluster, a lossy, duplicating, reordering network with
// symmetric and one-way partitions, crash-restarts that lose whatever was not
// persisted, tick skew, client proposals and ReadIndex reads, leadership
// transfers, snapshots with log compaction, and membership changes (learners,
// promotion, removal of the leader, replacement, shrink to one, growth).
//
// After every step it checks the safety properties of Raft (§5.4 / thesis
// §3.6.3): election safety, log matching, leader completeness, state machine
// safety (all nodes apply the same sequence), durability of committed
// entries, and linearizability of ReadIndex. After the faults heal it checks
// liveness: a leader is elected and a new proposal is applied everywhere
// within a bound.
#ifndef LOCKD_TESTS_SIM_SIM_H_
#define LOCKD_TESTS_SIM_SIM_H_

#include <cstdint>
#include <string>

namespace lockd::raft::sim {

struct SimOptions {
  uint64_t seed = 1;
  // Steps (one tick slot each) with faults injected.
  int chaos_steps = 1500;
  // Bound on steps after healing for a leader to emerge and commit.
  int liveness_steps = 2000;
  // Random membership changes.
  bool membership = true;
  // Print every event (for replaying a failing seed).
  bool verbose = false;
};

struct SimResult {
  bool ok = true;
  std::string error;  // the first violated property, with context
  int64_t steps = 0;
  uint64_t max_applied = 0;
  int elections = 0;
  int conf_changes = 0;
  int snapshots_sent = 0;
  int crashes = 0;
  int reads_served = 0;
  int transfers = 0;
};

SimResult RunSimulation(const SimOptions& opts);

}  // namespace lockd::raft::sim

#endif  // LOCKD_TESTS_SIM_SIM_H_
