// Configuration changes (Raft thesis §4.3 joint consensus, §4.2.2 learners)
// as copy -> mutate -> check invariants -> return: the tracker passed in is
// never modified, so a rejected change leaves no trace.
#ifndef LOCKD_RAFT_CORE_CONFCHANGE_H_
#define LOCKD_RAFT_CORE_CONFCHANGE_H_

#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/core/tracker.h"
#include "raft/core/types.h"

namespace lockd::raft {

struct ConfigAndProgress {
  TrackerConfig config;
  ProgressMap progress;
};

class Changer {
 public:
  // `tracker` must outlive the Changer; new progress entries start probing at
  // last_index.
  Changer(const ProgressTracker& tracker, uint64_t last_index)
      : tracker_(tracker), last_index_(last_index) {}

  // Enters a joint configuration: outgoing := incoming, then applies ccs to
  // incoming. Fails if already joint or on an invalid result.
  absl::StatusOr<ConfigAndProgress> EnterJoint(
      bool auto_leave, const std::vector<ConfChangeSingle>& ccs) const;
  // Leaves the joint configuration: drops outgoing, turns learners_next into
  // learners. Fails if not joint.
  absl::StatusOr<ConfigAndProgress> LeaveJoint() const;
  // Applies ccs directly; at most one voter may change (thesis §4.1).
  absl::StatusOr<ConfigAndProgress> Simple(
      const std::vector<ConfChangeSingle>& ccs) const;

 private:
  absl::StatusOr<ConfigAndProgress> CheckAndCopy() const;
  absl::Status Apply(ConfigAndProgress* cp,
                     const std::vector<ConfChangeSingle>& ccs) const;
  void MakeVoter(ConfigAndProgress* cp, uint64_t id) const;
  void MakeLearner(ConfigAndProgress* cp, uint64_t id) const;
  void Remove(ConfigAndProgress* cp, uint64_t id) const;
  void InitProgress(ConfigAndProgress* cp, uint64_t id, bool is_learner) const;

  const ProgressTracker& tracker_;
  uint64_t last_index_;
};

// Checks the structural invariants of a configuration and its progress map.
absl::Status CheckConfigInvariants(const TrackerConfig& cfg,
                                   const ProgressMap& progress);

// Rebuilds a configuration from a ConfState by replaying changes against an
// empty tracker (with the same inflight limits as `tracker`).
absl::StatusOr<ConfigAndProgress> RestoreConfig(const ProgressTracker& tracker,
                                                uint64_t last_index,
                                                const ConfState& cs);

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_CORE_CONFCHANGE_H_
