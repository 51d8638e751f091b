#include "raft/core/tracker.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "raft/core/check.h"

namespace lockd::raft {

// ----------------------------------------------------------------------------
// Inflights

Inflights::Inflights(size_t max_count, uint64_t max_bytes)
    : max_count_(max_count), max_bytes_(max_bytes) {
  RAFT_CHECK(max_count > 0, "max inflight count must be positive");
}

void Inflights::Add(uint64_t index, uint64_t bytes) {
  RAFT_CHECK(!Full(), "cannot add into a full inflights");
  size_t next = start_ + count_;
  if (next >= max_count_) next -= max_count_;
  if (next >= buffer_.size()) {
    // Grow lazily: most followers never fill their window.
    buffer_.resize(
        std::min(max_count_, std::max<size_t>(buffer_.size() * 2, 16)));
  }
  RAFT_CHECK(next < buffer_.size(), "inflights ring index out of range");
  buffer_[next] = Item{index, bytes};
  ++count_;
  bytes_ += bytes;
}

void Inflights::FreeLE(uint64_t to) {
  if (count_ == 0 || to < buffer_[start_].index) return;
  size_t idx = start_;
  size_t i = 0;
  for (; i < count_; ++i) {
    if (to < buffer_[idx].index) break;
    bytes_ -= buffer_[idx].bytes;
    if (++idx >= max_count_) idx -= max_count_;
  }
  count_ -= i;
  start_ = idx;
  if (count_ == 0) start_ = 0;
}

void Inflights::FreeFirstOne() {
  if (count_ == 0) return;
  FreeLE(buffer_[start_].index);
}

bool Inflights::Full() const {
  return count_ == max_count_ || (max_bytes_ != 0 && bytes_ >= max_bytes_);
}

void Inflights::Reset() {
  count_ = 0;
  start_ = 0;
  bytes_ = 0;
}

// ----------------------------------------------------------------------------
// Progress

const char* ProgressStateName(ProgressState s) {
  switch (s) {
    case ProgressState::kProbe:
      return "StateProbe";
    case ProgressState::kReplicate:
      return "StateReplicate";
    case ProgressState::kSnapshot:
      return "StateSnapshot";
  }
  return "?";
}

void Progress::ResetState(ProgressState s) {
  msg_app_flow_paused = false;
  pending_snapshot = 0;
  state = s;
  inflights.Reset();
}

void Progress::BecomeProbe() {
  // After a snapshot, the follower is known to have everything up to the
  // snapshot, so probing starts right after it.
  if (state == ProgressState::kSnapshot) {
    const uint64_t pending = pending_snapshot;
    ResetState(ProgressState::kProbe);
    next = std::max(match + 1, pending + 1);
  } else {
    ResetState(ProgressState::kProbe);
    next = match + 1;
  }
}

void Progress::BecomeReplicate() {
  ResetState(ProgressState::kReplicate);
  next = match + 1;
}

void Progress::BecomeSnapshot(uint64_t snapshot_index) {
  ResetState(ProgressState::kSnapshot);
  pending_snapshot = snapshot_index;
}

void Progress::UpdateOnEntriesSend(size_t entries, uint64_t bytes,
                                   uint64_t next_index) {
  switch (state) {
    case ProgressState::kReplicate:
      if (entries > 0) {
        const uint64_t last = next_index + entries - 1;
        next = std::max(next, last + 1);
        inflights.Add(last, bytes);
      }
      msg_app_flow_paused = inflights.Full();
      break;
    case ProgressState::kProbe:
      // One probe per heartbeat: wait for its answer (or the next heartbeat
      // response) before sending another.
      msg_app_flow_paused = true;
      break;
    case ProgressState::kSnapshot:
      RAFT_FATAL("sending append in unhandled state %s",
                 ProgressStateName(state));
  }
}

bool Progress::MaybeUpdate(uint64_t n) {
  bool updated = false;
  if (match < n) {
    match = n;
    updated = true;
    msg_app_flow_paused = false;
  }
  next = std::max(next, n + 1);
  return updated;
}

bool Progress::MaybeDecrTo(uint64_t rejected, uint64_t match_hint) {
  if (state == ProgressState::kReplicate) {
    // A rejection below match is stale (reordered message).
    if (rejected <= match) return false;
    next = match + 1;
    return true;
  }
  // In probe state only the rejection of the outstanding probe counts.
  if (next == 0 || next - 1 != rejected) return false;
  next = std::max<uint64_t>(std::min(rejected, match_hint + 1), match + 1);
  msg_app_flow_paused = false;
  return true;
}

bool Progress::IsPaused() const {
  switch (state) {
    case ProgressState::kProbe:
    case ProgressState::kReplicate:
      return msg_app_flow_paused;
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

std::string Progress::DebugString() const {
  std::string out = absl::StrFormat("%s match=%d next=%d",
                                    ProgressStateName(state), match, next);
  if (is_learner) absl::StrAppend(&out, " learner");
  if (state == ProgressState::kSnapshot) {
    absl::StrAppend(&out, " pending_snap=", pending_snapshot);
  }
  if (!recent_active) absl::StrAppend(&out, " inactive");
  if (inflights.Count() > 0) {
    absl::StrAppend(&out, " inflight=", inflights.Count());
    if (inflights.Full()) absl::StrAppend(&out, "[full]");
  }
  if (msg_app_flow_paused && state == ProgressState::kProbe) {
    absl::StrAppend(&out, " paused");
  }
  return out;
}

// ----------------------------------------------------------------------------
// Quorum

std::set<uint64_t> JointConfig::IDs() const {
  std::set<uint64_t> ids = incoming;
  ids.insert(outgoing.begin(), outgoing.end());
  return ids;
}

uint64_t MajorityCommittedIndex(const MajorityConfig& c,
                                const ProgressMap& progress) {
  const size_t n = c.size();
  if (n == 0) return std::numeric_limits<uint64_t>::max();
  // Small configurations (the common case) sort on the stack.
  uint64_t stack[7];
  std::vector<uint64_t> heap;
  uint64_t* srt = stack;
  if (n > 7) {
    heap.resize(n);
    srt = heap.data();
  }
  size_t i = 0;
  for (uint64_t id : c) {
    auto it = progress.find(id);
    srt[i++] = it == progress.end() ? 0 : it->second.match;
  }
  std::sort(srt, srt + n);
  // The (n/2+1)-th largest match is on a majority.
  return srt[n - (n / 2 + 1)];
}

VoteResult MajorityVoteResult(const MajorityConfig& c,
                              const std::map<uint64_t, bool>& votes) {
  if (c.empty()) return VoteResult::kWon;  // by convention
  size_t yes = 0, missing = 0;
  for (uint64_t id : c) {
    auto it = votes.find(id);
    if (it == votes.end()) {
      ++missing;
    } else if (it->second) {
      ++yes;
    }
  }
  const size_t q = c.size() / 2 + 1;
  if (yes >= q) return VoteResult::kWon;
  if (yes + missing >= q) return VoteResult::kPending;
  return VoteResult::kLost;
}

// ----------------------------------------------------------------------------
// ProgressTracker

std::string TrackerConfig::DebugString() const {
  std::string out =
      absl::StrCat("voters=(", absl::StrJoin(voters.incoming, " "), ")");
  if (voters.IsJoint()) {
    absl::StrAppend(&out, "&&(", absl::StrJoin(voters.outgoing, " "), ")");
  }
  if (!learners.empty()) {
    absl::StrAppend(&out, " learners=(", absl::StrJoin(learners, " "), ")");
  }
  if (!learners_next.empty()) {
    absl::StrAppend(&out, " learners_next=(", absl::StrJoin(learners_next, " "),
                    ")");
  }
  if (auto_leave) absl::StrAppend(&out, " autoleave");
  return out;
}

ConfState ProgressTracker::GetConfState() const {
  ConfState cs;
  cs.voters.assign(config.voters.incoming.begin(),
                   config.voters.incoming.end());
  cs.voters_outgoing.assign(config.voters.outgoing.begin(),
                            config.voters.outgoing.end());
  cs.learners.assign(config.learners.begin(), config.learners.end());
  cs.learners_next.assign(config.learners_next.begin(),
                          config.learners_next.end());
  cs.auto_leave = config.auto_leave;
  return cs;
}

uint64_t ProgressTracker::Committed() const {
  const uint64_t in = MajorityCommittedIndex(config.voters.incoming, progress);
  const uint64_t out = MajorityCommittedIndex(config.voters.outgoing, progress);
  return std::min(in, out);
}

VoteResult ProgressTracker::VoteResultOf(
    const std::map<uint64_t, bool>& votes) const {
  const VoteResult r1 = MajorityVoteResult(config.voters.incoming, votes);
  const VoteResult r2 = MajorityVoteResult(config.voters.outgoing, votes);
  if (r1 == r2) return r1;
  if (r1 == VoteResult::kLost || r2 == VoteResult::kLost) {
    return VoteResult::kLost;
  }
  // One won, the other is pending.
  return VoteResult::kPending;
}

bool ProgressTracker::QuorumActive() const {
  std::map<uint64_t, bool> votes;
  for (const auto& [id, pr] : progress) {
    if (pr.is_learner) continue;
    votes[id] = pr.recent_active;
  }
  return VoteResultOf(votes) == VoteResult::kWon;
}

void ProgressTracker::RecordVote(uint64_t id, bool granted) {
  // The first vote from a node counts; later ones are duplicates.
  votes_.emplace(id, granted);
}

VoteResult ProgressTracker::TallyVotes(int* granted, int* rejected) const {
  int g = 0, r = 0;
  for (const auto& [id, pr] : progress) {
    if (pr.is_learner) continue;
    auto it = votes_.find(id);
    if (it == votes_.end()) continue;
    if (it->second) {
      ++g;
    } else {
      ++r;
    }
  }
  if (granted != nullptr) *granted = g;
  if (rejected != nullptr) *rejected = r;
  return VoteResultOf(votes_);
}

}  // namespace lockd::raft
