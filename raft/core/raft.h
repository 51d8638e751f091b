// The Raft consensus state machine (Ongaro & Ousterhout, "In Search of an
// Understandable Consensus Algorithm", and Ongaro's thesis). Internal to the
// core: applications use RawNode (raw_node.h), which wraps this class with
// the Ready/Advance handoff.
//
// Deterministic: no clocks (Tick() advances logical time), no threads, no
// I/O, and election jitter from a PRNG seeded by Config::seed.
#ifndef LOCKD_RAFT_CORE_RAFT_H_
#define LOCKD_RAFT_CORE_RAFT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/confchange.h"
#include "raft/core/log.h"
#include "raft/core/storage.h"
#include "raft/core/tracker.h"
#include "raft/core/types.h"

namespace lockd::raft {

enum class StateType : uint8_t {
  kFollower,
  kCandidate,
  kLeader,
  kPreCandidate,
};
const char* StateTypeName(StateType s);

struct Config {
  // This node's id; never 0.
  uint64_t id = kNone;
  // Ticks without hearing from a leader before a follower campaigns; the
  // actual timeout is drawn uniformly from [election_tick, 2*election_tick).
  int election_tick = 10;
  // Ticks between leader heartbeats; must be < election_tick.
  int heartbeat_tick = 1;
  // Stable log and snapshot; must outlive the node. Not owned.
  const Storage* storage = nullptr;
  // Index of the last entry the application has applied (restart).
  uint64_t applied = 0;
  // Payload bytes per MsgApp (at least one entry is always sent).
  uint64_t max_size_per_msg_bytes = 1 << 20;
  // Payload bytes of committed entries per Ready (0: max_size_per_msg).
  uint64_t max_committed_size_per_ready_bytes = 0;
  // Uncommitted payload bytes a leader accepts before dropping proposals
  // with kResourceExhausted (0: unlimited).
  uint64_t max_uncommitted_entries_bytes = 0;
  // In-flight MsgApp messages per follower in replicate state.
  int max_inflight_msgs = 256;
  // In-flight payload bytes per follower (0: unlimited).
  uint64_t max_inflight_bytes = 0;
  // Queued ReadIndex requests waiting for the leader's first commit.
  int max_pending_read_index = 4096;
  // Leader steps down when it hasn't heard from a quorum within an election
  // timeout; followers ignore votes while they have a live leader (§6.2).
  bool check_quorum = true;
  // Pre-vote phase (thesis §9.6) so a partitioned node can't inflate terms.
  bool pre_vote = true;
  // Seed of the election-jitter PRNG.
  uint64_t seed = 0;
  // Run the full invariant check after every state change (costly; on by
  // default in debug builds).
#ifdef NDEBUG
  bool check_invariants = false;
#else
  bool check_invariants = true;
#endif

  absl::Status Validate() const;
};

// Volatile state, useful for logging and the application.
struct SoftState {
  uint64_t lead = kNone;
  StateType raft_state = StateType::kFollower;

  friend bool operator==(const SoftState& a, const SoftState& b) {
    return a.lead == b.lead && a.raft_state == b.raft_state;
  }
  friend bool operator!=(const SoftState& a, const SoftState& b) {
    return !(a == b);
  }
};

// The outcome of a ReadIndex request: once the application has applied up to
// `index`, a read reflecting every write committed before the request was
// issued may be served. `request_ctx` is the caller's context.
struct ReadState {
  uint64_t index = 0;
  std::string request_ctx;
};

// A small deterministic PRNG (splitmix64).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  uint64_t Uniform(uint64_t n) { return Next() % n; }

 private:
  uint64_t state_;
};

class Raft {
 public:
  // CHECK-fails on an invalid config or unreadable storage.
  explicit Raft(const Config& c);

  Raft(const Raft&) = delete;
  Raft& operator=(const Raft&) = delete;

  // Advances logical time by one tick.
  void Tick();
  // Handles a message; errors are reported for proposals and requests only.
  absl::Status Step(Message m);

  // Applies a committed conf change to the tracker; returns the new config.
  absl::StatusOr<ConfState> ApplyConfChange(const ConfChange& cc);

  // Called by RawNode::Advance after the application persisted `entries`
  // and/or installed the snapshot and applied up to `applied`.
  // `last_index`/`last_term` identify the last persisted entry (0 if none);
  // `snap_index` the persisted snapshot (0 if none).
  void OnPersisted(uint64_t last_index, uint64_t last_term,
                   uint64_t snap_index);
  void OnApplied(uint64_t applied, uint64_t committed_bytes);

  SoftState GetSoftState() const { return SoftState{lead_, state_}; }
  HardState GetHardState() const {
    return HardState{term_, vote_, raft_log_.committed()};
  }

  // Checks every structural invariant; RAFT_CHECK-fails on a violation.
  void CheckInvariants() const;

  uint64_t id() const { return id_; }
  uint64_t term() const { return term_; }
  uint64_t vote() const { return vote_; }
  uint64_t lead() const { return lead_; }
  StateType state() const { return state_; }
  uint64_t lead_transferee() const { return lead_transferee_; }
  bool is_learner() const { return is_learner_; }
  bool promotable() const;
  const RaftLog& raft_log() const { return raft_log_; }
  const ProgressTracker& tracker() const { return trk_; }
  uint64_t uncommitted_size() const { return uncommitted_size_; }
  uint64_t pending_conf_index() const { return pending_conf_index_; }
  int randomized_election_timeout() const {
    return randomized_election_timeout_;
  }
  // Messages from peers that broke the protocol (e.g. an append conflicting
  // with committed entries) and were dropped. A correct cluster has none.
  uint64_t protocol_violations() const { return protocol_violations_; }

  void CheckInvariantsIfEnabled() const {
    if (check_invariants_) CheckInvariants();
  }

  std::vector<Message>& msgs() { return msgs_; }
  const std::vector<Message>& msgs_view() const { return msgs_; }
  const std::vector<ReadState>& read_states_view() const {
    return read_states_;
  }
  std::vector<ReadState>& read_states() { return read_states_; }

 private:
  enum class CampaignType { kPreElection, kElection, kTransfer };
  struct ReadIndexStatus {
    Message req;
    uint64_t index = 0;
    std::map<uint64_t, bool> acks;
  };

  void Send(Message m);
  // `announces_commit`: sent because the commit index advanced. An empty
  // append then needs no answer from a follower in replicate state: every
  // entry it lacks is already on its way, and the answers to those appends
  // say all an answer to this one could.
  bool MaybeSendAppend(uint64_t to, bool send_if_empty,
                       bool announces_commit = false);
  void SendAppend(uint64_t to) { MaybeSendAppend(to, true); }
  void SendHeartbeat(uint64_t to, const std::string& ctx);
  void BcastAppend(bool announces_commit = false);
  void BcastHeartbeat();
  void BcastHeartbeatWithCtx(const std::string& ctx);
  void SendTimeoutNow(uint64_t to);

  bool MaybeCommit();
  void OnCommitAdvanced();
  void Reset(uint64_t term);
  bool AppendEntry(std::vector<Entry>* es);
  bool IncreaseUncommittedSize(const std::vector<Entry>& es);
  void ReduceUncommittedSize(uint64_t bytes);

  void TickElection();
  void TickHeartbeat();
  bool PastElectionTimeout() const {
    return election_elapsed_ >= randomized_election_timeout_;
  }
  void ResetRandomizedElectionTimeout();

  void BecomeFollower(uint64_t term, uint64_t lead);
  void BecomeCandidate();
  void BecomePreCandidate();
  void BecomeLeader();

  void Hup(CampaignType t);
  void Campaign(CampaignType t);
  VoteResult Poll(uint64_t id, MessageType t, bool granted);

  absl::Status StepLeader(Message& m);
  absl::Status StepCandidate(Message& m);
  absl::Status StepFollower(Message& m);
  absl::Status HandlePropose(Message& m);
  absl::Status CheckConfChangeProposal(const Entry& e) const;

  void HandleAppendEntries(Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshot(Message& m);
  bool Restore(Snapshot s);
  ConfState SwitchToConfig(ConfigAndProgress cp);

  bool CommittedEntryInCurrentTerm() const;
  void AddCommitHint(Message* resp, uint64_t candidate_last) const;
  void MaybeCommitFromHint(const Message& m);
  void SendReadIndexResponse(Message m);
  void ReleasePendingReadIndexMessages();
  Message ResponseToReadIndexReq(const Message& req, uint64_t read_index);
  void AbortLeaderTransfer() { lead_transferee_ = kNone; }
  void MaybeAutoLeave();
  void MaybeHandOffLeadership();
  bool IsVoter() const;
  void ProtocolViolation() { ++protocol_violations_; }

  const uint64_t id_;
  uint64_t term_ = 0;
  uint64_t vote_ = kNone;
  std::vector<ReadState> read_states_;
  RaftLog raft_log_;
  const uint64_t max_msg_size_;
  const uint64_t max_uncommitted_size_;
  const size_t max_pending_read_index_;
  ProgressTracker trk_;
  StateType state_ = StateType::kFollower;
  bool is_learner_ = false;
  std::vector<Message> msgs_;
  uint64_t lead_ = kNone;
  uint64_t lead_transferee_ = kNone;
  // Index of the latest conf change in the log (leader only); a new one is
  // refused until this is applied.
  uint64_t pending_conf_index_ = 0;
  // Payload bytes of uncommitted entries (leader only).
  uint64_t uncommitted_size_ = 0;
  // ReadIndex requests awaiting heartbeat acks (thesis §6.4), in order.
  std::map<std::string, ReadIndexStatus> pending_read_index_;
  std::deque<std::string> read_index_queue_;
  // ReadIndex requests received before this leader committed in its term.
  std::vector<Message> pending_read_index_messages_;
  const bool check_quorum_;
  const bool pre_vote_;
  const bool check_invariants_;
  const int heartbeat_timeout_;
  const int election_timeout_;
  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  Rng rng_;
  uint64_t protocol_violations_ = 0;
};

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_CORE_RAFT_H_
