#include "raft/core/confchange.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace lockd::raft {

absl::Status CheckConfigInvariants(const TrackerConfig& cfg,
                                   const ProgressMap& progress) {
  for (uint64_t id : cfg.voters.IDs()) {
    if (progress.count(id) == 0) {
      return absl::InternalError(absl::StrCat("no progress for voter ", id));
    }
  }
  for (uint64_t id : cfg.learners) {
    if (progress.count(id) == 0) {
      return absl::InternalError(absl::StrCat("no progress for learner ", id));
    }
  }
  for (uint64_t id : cfg.learners_next) {
    if (progress.count(id) == 0) {
      return absl::InternalError(
          absl::StrCat("no progress for learner_next ", id));
    }
    // A learner_next is still an outgoing voter.
    if (cfg.voters.outgoing.count(id) == 0) {
      return absl::InternalError(
          absl::StrCat(id, " is in learners_next but not voters_outgoing"));
    }
    if (progress.at(id).is_learner) {
      return absl::InternalError(
          absl::StrCat(id, " is in learners_next but is already a learner"));
    }
  }
  for (uint64_t id : cfg.learners) {
    if (cfg.voters.Contains(id)) {
      return absl::InternalError(absl::StrCat(id, " is learner and voter"));
    }
    if (!progress.at(id).is_learner) {
      return absl::InternalError(
          absl::StrCat(id, " is in learners but not marked as learner"));
    }
  }
  for (const auto& [id, pr] : progress) {
    if (!cfg.voters.Contains(id) && cfg.learners.count(id) == 0) {
      return absl::InternalError(
          absl::StrCat("progress for ", id, " which is not in the config"));
    }
    if (cfg.voters.Contains(id) && pr.is_learner) {
      return absl::InternalError(
          absl::StrCat(id, " is a voter but marked as learner"));
    }
  }
  if (!cfg.voters.IsJoint()) {
    if (!cfg.learners_next.empty()) {
      return absl::InternalError("learners_next must be empty when not joint");
    }
    if (cfg.auto_leave) {
      return absl::InternalError("auto_leave must be false when not joint");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ConfigAndProgress> Changer::CheckAndCopy() const {
  ConfigAndProgress cp{tracker_.config, tracker_.progress};
  absl::Status s = CheckConfigInvariants(cp.config, cp.progress);
  if (!s.ok()) return s;
  return cp;
}

absl::StatusOr<ConfigAndProgress> Changer::EnterJoint(
    bool auto_leave, const std::vector<ConfChangeSingle>& ccs) const {
  absl::StatusOr<ConfigAndProgress> cp = CheckAndCopy();
  if (!cp.ok()) return cp.status();
  if (cp->config.voters.IsJoint()) {
    return absl::FailedPreconditionError("config is already joint");
  }
  if (cp->config.voters.incoming.empty()) {
    // Nothing to be joint with; a bootstrap should use Simple.
    return absl::FailedPreconditionError(
        "can't make a zero-voter config joint");
  }
  cp->config.voters.outgoing = cp->config.voters.incoming;
  absl::Status s = Apply(&*cp, ccs);
  if (!s.ok()) return s;
  cp->config.auto_leave = auto_leave;
  s = CheckConfigInvariants(cp->config, cp->progress);
  if (!s.ok()) return s;
  return cp;
}

absl::StatusOr<ConfigAndProgress> Changer::LeaveJoint() const {
  absl::StatusOr<ConfigAndProgress> cp = CheckAndCopy();
  if (!cp.ok()) return cp.status();
  TrackerConfig& cfg = cp->config;
  if (!cfg.voters.IsJoint()) {
    return absl::FailedPreconditionError("can't leave a non-joint config");
  }
  for (uint64_t id : cfg.learners_next) {
    cfg.learners.insert(id);
    cp->progress.at(id).is_learner = true;
  }
  cfg.learners_next.clear();
  for (uint64_t id : cfg.voters.outgoing) {
    if (cfg.voters.incoming.count(id) == 0 && cfg.learners.count(id) == 0) {
      cp->progress.erase(id);
    }
  }
  cfg.voters.outgoing.clear();
  cfg.auto_leave = false;
  absl::Status s = CheckConfigInvariants(cfg, cp->progress);
  if (!s.ok()) return s;
  return cp;
}

absl::StatusOr<ConfigAndProgress> Changer::Simple(
    const std::vector<ConfChangeSingle>& ccs) const {
  absl::StatusOr<ConfigAndProgress> cp = CheckAndCopy();
  if (!cp.ok()) return cp.status();
  if (cp->config.voters.IsJoint()) {
    return absl::FailedPreconditionError(
        "can't apply simple config change in joint config");
  }
  absl::Status s = Apply(&*cp, ccs);
  if (!s.ok()) return s;
  // Symmetric difference of the voter sets before and after.
  const MajorityConfig& before = tracker_.config.voters.incoming;
  const MajorityConfig& after = cp->config.voters.incoming;
  size_t diff = 0;
  for (uint64_t id : before) diff += after.count(id) == 0;
  for (uint64_t id : after) diff += before.count(id) == 0;
  if (diff > 1) {
    return absl::InvalidArgumentError(
        "more than one voter changed without entering joint config");
  }
  s = CheckConfigInvariants(cp->config, cp->progress);
  if (!s.ok()) return s;
  return cp;
}

absl::Status Changer::Apply(ConfigAndProgress* cp,
                            const std::vector<ConfChangeSingle>& ccs) const {
  for (const ConfChangeSingle& cc : ccs) {
    if (cc.node_id == kNone) continue;  // etcd compatibility: a no-op
    switch (cc.type) {
      case ConfChangeType::kAddNode:
        MakeVoter(cp, cc.node_id);
        break;
      case ConfChangeType::kAddLearnerNode:
        MakeLearner(cp, cc.node_id);
        break;
      case ConfChangeType::kRemoveNode:
        Remove(cp, cc.node_id);
        break;
      default:
        return absl::InvalidArgumentError("unexpected conf change type");
    }
  }
  if (cp->config.voters.incoming.empty()) {
    return absl::InvalidArgumentError("removed all voters");
  }
  return absl::OkStatus();
}

void Changer::MakeVoter(ConfigAndProgress* cp, uint64_t id) const {
  auto it = cp->progress.find(id);
  if (it == cp->progress.end()) {
    InitProgress(cp, id, /*is_learner=*/false);
    return;
  }
  it->second.is_learner = false;
  cp->config.learners.erase(id);
  cp->config.learners_next.erase(id);
  cp->config.voters.incoming.insert(id);
}

void Changer::MakeLearner(ConfigAndProgress* cp, uint64_t id) const {
  auto it = cp->progress.find(id);
  if (it == cp->progress.end()) {
    InitProgress(cp, id, /*is_learner=*/true);
    return;
  }
  if (it->second.is_learner) return;
  // Remove any existing voter role, keeping the progress.
  Progress pr = it->second;
  Remove(cp, id);
  cp->progress.insert_or_assign(id, pr);
  // An outgoing voter can't be a learner yet: it becomes one when the joint
  // config is left (thesis §4.3, both majorities must still count it).
  if (cp->config.voters.outgoing.count(id) > 0) {
    cp->config.learners_next.insert(id);
  } else {
    cp->progress.at(id).is_learner = true;
    cp->config.learners.insert(id);
  }
}

void Changer::Remove(ConfigAndProgress* cp, uint64_t id) const {
  if (cp->progress.count(id) == 0) return;
  cp->config.voters.incoming.erase(id);
  cp->config.learners.erase(id);
  cp->config.learners_next.erase(id);
  // An outgoing voter keeps its progress until the joint config is left.
  if (cp->config.voters.outgoing.count(id) == 0) cp->progress.erase(id);
}

void Changer::InitProgress(ConfigAndProgress* cp, uint64_t id,
                           bool is_learner) const {
  if (is_learner) {
    cp->config.learners.insert(id);
  } else {
    cp->config.voters.incoming.insert(id);
  }
  Progress pr = tracker_.MakeProgress();
  // Probing starts at the leader's last index; rejections walk it back.
  pr.next = std::max<uint64_t>(last_index_, 1);
  pr.match = 0;
  pr.is_learner = is_learner;
  // New nodes count as active so check-quorum does not fire before they
  // have had a chance to respond.
  pr.recent_active = true;
  cp->progress.insert_or_assign(id, std::move(pr));
}

absl::StatusOr<ConfigAndProgress> RestoreConfig(const ProgressTracker& tracker,
                                                uint64_t last_index,
                                                const ConfState& cs) {
  std::vector<ConfChangeSingle> outgoing, incoming;
  for (uint64_t id : cs.voters_outgoing) {
    outgoing.push_back({ConfChangeType::kAddNode, id});
  }
  // Incoming: remove the outgoing voters, then add the final roles.
  for (uint64_t id : cs.voters_outgoing) {
    incoming.push_back({ConfChangeType::kRemoveNode, id});
  }
  for (uint64_t id : cs.voters) {
    incoming.push_back({ConfChangeType::kAddNode, id});
  }
  for (uint64_t id : cs.learners) {
    incoming.push_back({ConfChangeType::kAddLearnerNode, id});
  }
  for (uint64_t id : cs.learners_next) {
    incoming.push_back({ConfChangeType::kAddLearnerNode, id});
  }
  ProgressTracker scratch(tracker.max_inflight(), tracker.max_inflight_bytes());
  auto step = [&](const absl::StatusOr<ConfigAndProgress>& r) -> absl::Status {
    if (!r.ok()) return r.status();
    scratch.config = r->config;
    scratch.progress = r->progress;
    return absl::OkStatus();
  };
  if (outgoing.empty()) {
    for (const ConfChangeSingle& cc : incoming) {
      if (cs.voters.empty() && cc.type != ConfChangeType::kAddNode) {
        // Learners without voters: not a valid configuration.
        return absl::InvalidArgumentError(
            "conf state has learners but no voters");
      }
      absl::Status s = step(Changer(scratch, last_index).Simple({cc}));
      if (!s.ok()) return s;
    }
  } else {
    for (const ConfChangeSingle& cc : outgoing) {
      absl::Status s = step(Changer(scratch, last_index).Simple({cc}));
      if (!s.ok()) return s;
    }
    absl::Status s =
        step(Changer(scratch, last_index).EnterJoint(cs.auto_leave, incoming));
    if (!s.ok()) return s;
  }
  return ConfigAndProgress{scratch.config, scratch.progress};
}

}  // namespace lockd::raft
