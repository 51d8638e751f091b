// Replication progress tracking and quorum arithmetic (Raft §5.3, thesis
// §4.3 joint consensus, thesis §3.10 flow control).
#ifndef LOCKD_RAFT_CORE_TRACKER_H_
#define LOCKD_RAFT_CORE_TRACKER_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "raft/core/types.h"

namespace lockd::raft {

// A bounded window of in-flight MsgApp messages to one follower, each
// recorded by the last index it carried and its payload bytes. Full when it
// holds max_count messages or max_bytes bytes (max_bytes 0 = unbounded).
class Inflights {
 public:
  Inflights(size_t max_count, uint64_t max_bytes);

  void Add(uint64_t index, uint64_t bytes);
  // Frees all inflights with index <= to.
  void FreeLE(uint64_t to);
  void FreeFirstOne();
  bool Full() const;
  size_t Count() const { return count_; }
  uint64_t Bytes() const { return bytes_; }
  void Reset();

 private:
  struct Item {
    uint64_t index;
    uint64_t bytes;
  };
  size_t start_ = 0;
  size_t count_ = 0;
  uint64_t bytes_ = 0;
  size_t max_count_;
  uint64_t max_bytes_;
  std::vector<Item> buffer_;  // ring, grown lazily up to max_count_
};

enum class ProgressState : uint8_t {
  // Sends at most one MsgApp per heartbeat interval, to find the match.
  kProbe,
  // Optimistically streams entries, bounded by the inflight window.
  kReplicate,
  // Waits for a snapshot to be delivered; sends no entries.
  kSnapshot,
};
const char* ProgressStateName(ProgressState s);

// The leader's view of one follower.
struct Progress {
  Progress(size_t max_inflight, uint64_t max_inflight_bytes)
      : inflights(max_inflight, max_inflight_bytes) {}

  uint64_t match = 0;  // highest index known to be replicated
  uint64_t next = 0;   // next index to send
  ProgressState state = ProgressState::kProbe;
  // Index of the snapshot being sent (kSnapshot state).
  uint64_t pending_snapshot = 0;
  // Heard from this follower since the last check-quorum round.
  bool recent_active = false;
  // In kProbe: a probe is outstanding. In kReplicate: the window is full.
  bool msg_app_flow_paused = false;
  Inflights inflights;
  bool is_learner = false;

  void ResetState(ProgressState s);
  void BecomeProbe();
  void BecomeReplicate();
  void BecomeSnapshot(uint64_t snapshot_index);
  // Accounts for a MsgApp with `entries` entries and `bytes` payload bytes
  // starting at `next_index`.
  void UpdateOnEntriesSend(size_t entries, uint64_t bytes, uint64_t next_index);
  // The follower acknowledged index n. Returns true if match advanced.
  bool MaybeUpdate(uint64_t n);
  // The follower rejected the append at `rejected`; match_hint is the
  // highest index it might match. Returns false for a stale rejection.
  bool MaybeDecrTo(uint64_t rejected, uint64_t match_hint);
  bool IsPaused() const;
  std::string DebugString() const;
};

enum class VoteResult : uint8_t { kPending, kLost, kWon };

// A set of voters deciding by simple majority. Empty: every vote is won and
// the committed index is unbounded (so it does not constrain a joint config).
using MajorityConfig = std::set<uint64_t>;

// Incoming and (during joint consensus) outgoing voter sets; decisions need
// a majority of both.
struct JointConfig {
  MajorityConfig incoming;
  MajorityConfig outgoing;

  bool IsJoint() const { return !outgoing.empty(); }
  bool Contains(uint64_t id) const {
    return incoming.count(id) > 0 || outgoing.count(id) > 0;
  }
  std::set<uint64_t> IDs() const;
};

using ProgressMap = std::map<uint64_t, Progress>;

struct TrackerConfig {
  JointConfig voters;
  bool auto_leave = false;
  std::set<uint64_t> learners;
  // Outgoing voters to be turned into learners when leaving the joint config.
  std::set<uint64_t> learners_next;

  std::string DebugString() const;
};

class ProgressTracker {
 public:
  ProgressTracker(size_t max_inflight, uint64_t max_inflight_bytes)
      : max_inflight_(max_inflight), max_inflight_bytes_(max_inflight_bytes) {}

  TrackerConfig config;
  ProgressMap progress;

  ConfState GetConfState() const;
  bool IsSingleton() const {
    return config.voters.incoming.size() == 1 && !config.voters.IsJoint();
  }
  // The largest index replicated on a quorum (by progress.match).
  uint64_t Committed() const;
  // True if a quorum of voters was recently active (check quorum, §6.2).
  bool QuorumActive() const;
  void ResetVotes() { votes_.clear(); }
  void RecordVote(uint64_t id, bool granted);
  VoteResult TallyVotes(int* granted, int* rejected) const;
  VoteResult VoteResultOf(const std::map<uint64_t, bool>& votes) const;

  Progress MakeProgress() const {
    return Progress(max_inflight_, max_inflight_bytes_);
  }
  size_t max_inflight() const { return max_inflight_; }
  uint64_t max_inflight_bytes() const { return max_inflight_bytes_; }

 private:
  size_t max_inflight_;
  uint64_t max_inflight_bytes_;
  std::map<uint64_t, bool> votes_;
};

// Quorum arithmetic on one majority config.
uint64_t MajorityCommittedIndex(const MajorityConfig& c,
                                const ProgressMap& progress);
VoteResult MajorityVoteResult(const MajorityConfig& c,
                              const std::map<uint64_t, bool>& votes);

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_CORE_TRACKER_H_
