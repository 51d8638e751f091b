// RawNode: the public face of the Raft core. One owner thread drives it:
//
//   loop:
//     node.Tick() every tick interval; node.Step(msg) for each received
//     message; node.Propose(...) etc. for client requests.
//     if (node.HasReady()) {
//       Ready rd = node.GetReady();
//       ... act on rd exactly in the order documented on Ready ...
//       node.Advance(rd);
//     }
//
// Not thread-safe: every method must be called from the owner thread.
// Deterministic: the same Config (including seed), Storage contents and
// sequence of calls produce the same Readys.
#ifndef LOCKD_RAFT_CORE_RAW_NODE_H_
#define LOCKD_RAFT_CORE_RAW_NODE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/raft.h"
#include "raft/core/storage.h"
#include "raft/core/tracker.h"
#include "raft/core/types.h"

namespace lockd::raft {

// Everything the node needs its owner to do, handed over in one batch.
//
// The owner MUST act in this order (Raft §5, thesis §10.2.1):
//  1. Persist, as ONE atomic synced write: `snapshot` if not empty (it
//     replaces the log up to its index), then `entries` (first discarding
//     every stored entry with index >= entries[0].index), then
//     `hard_state` if not empty. `must_sync` says whether a sync is needed.
//  2. Messages for which MaySendBeforePersisting(rd, m) is true (the
//     leader's appends, heartbeats and snapshots, when this Ready does not
//     change term or vote) may be sent before or during step 1: the leader
//     counts its own copy towards the commit quorum only after Advance().
//     Every other message (votes, append responses: they promise durable
//     state) is sent only after step 1 completed.
//  3. Install `snapshot` into the state machine, then apply
//     `committed_entries` in order. For a kConfChange entry, decode it and
//     call RawNode::ApplyConfChange. Serve `read_states` once the applied
//     index reaches each ReadState::index.
//  4. Call Advance(rd).
// A crash at any point is safe: what step 1 did not write is forgotten.
struct Ready {
  // Leader and role; empty if unchanged since the previous Ready. Volatile:
  // never persisted.
  std::optional<SoftState> soft_state;
  // Term, vote and commit; IsEmpty() if unchanged since the previous Ready.
  HardState hard_state;
  // ReadIndex results in request order.
  std::vector<ReadState> read_states;
  // Entries to persist (step 1).
  std::vector<Entry> entries;
  // Snapshot to persist (step 1) and install (step 3); IsEmpty() if none.
  Snapshot snapshot;
  // Committed entries to apply (step 3), in index order, contiguous with
  // the previously applied index. Possibly including entries from
  // `entries` above, which is why persisting precedes applying. Empty while
  // a snapshot is pending.
  std::vector<Entry> committed_entries;
  // Outgoing messages (step 2).
  std::vector<Message> messages;
  // Whether step 1 needs a synced write.
  bool must_sync = false;
  // The hard state changes term or vote: no message may leave before it is
  // durable.
  bool term_or_vote_changed = false;
};

// True if `m` of `rd` may be sent before rd's persistence completed.
bool MaySendBeforePersisting(const Ready& rd, const Message& m);

// A snapshot of the node's state for callers and tests.
struct NodeStatus {
  uint64_t id = kNone;
  HardState hard_state;
  SoftState soft_state;
  uint64_t applied = 0;
  uint64_t lead_transferee = kNone;
  TrackerConfig config;
  // Replication progress of every peer; only filled on the leader.
  ProgressMap progress;
};

class RawNode {
 public:
  // Validates the config; the node starts as a follower. Its state comes
  // from config.storage (a new cluster: a ConfState and/or bootstrap
  // entries written by BootstrapStorage).
  static absl::StatusOr<std::unique_ptr<RawNode>> Create(const Config& config);

  // Advances logical time by one tick (elections, heartbeats, check-quorum
  // and transfer timeouts are all measured in ticks).
  void Tick();
  // Starts an election now (skips the timeout; still honours pre-vote).
  absl::Status Campaign();

  // Proposes a command. OK means appended to the leader's log (it may still
  // be lost if leadership changes before it commits; the caller learns the
  // outcome by seeing it applied). Errors (the proposal is dropped):
  //   kUnavailable         not the leader / no leader (message names the
  //                        leader if known) or the leader was removed
  //   kFailedPrecondition  a leadership transfer is in progress
  //   kResourceExhausted   over max_uncommitted_entries_bytes
  absl::Status Propose(std::string data);
  // Proposes several commands as one batch (one append message per peer).
  absl::Status ProposeBatch(std::vector<std::string> data);
  // Proposes a membership change. In addition to Propose's errors:
  //   kFailedPrecondition  the leader has not yet committed an entry of its
  //                        term, a previous change is not yet applied, or
  //                        the joint state does not allow this change
  //   kInvalidArgument     the change is invalid for the current config
  absl::Status ProposeConfChange(const ConfChange& cc);
  // Applies a committed conf change (step 3 of Ready). Returns the new
  // configuration, which the application stores with its next snapshot.
  // An invalid change (impossible for entries this core proposed) leaves
  // the configuration unchanged and returns the error on every node alike.
  absl::StatusOr<ConfState> ApplyConfChange(const ConfChange& cc);

  // Delivers a message from a peer. Rejects local-only message types and
  // responses from unknown peers (kInvalidArgument / kNotFound).
  absl::Status Step(Message m);

  // Requests a linearizable read (thesis §6.4). The answer arrives in a
  // later Ready's read_states with the same ctx; ctx must be unique among
  // outstanding requests. A request may be dropped silently (e.g. the leader
  // changes): callers time out and retry. kUnavailable if there is no
  // leader, kResourceExhausted if too many requests are queued.
  absl::Status ReadIndex(std::string ctx);

  // Asks the leader to hand leadership to `transferee` (thesis §3.10): the
  // leader catches it up, then sends TimeoutNow. Proposals are refused
  // during the transfer, which is aborted after an election timeout.
  absl::Status TransferLeadership(uint64_t transferee);

  // Transport feedback.
  void ReportUnreachable(uint64_t id);
  void ReportSnapshot(uint64_t id, bool success);

  // True if GetReady() would return something to do. False while a Ready
  // is outstanding (between GetReady and Advance).
  bool HasReady() const;
  // CHECK-fails if the previous Ready was not Advance()d.
  Ready GetReady();
  // Acknowledges that the last Ready was handled completely (persisted,
  // sent, applied). Advance uses only what GetReady recorded, so the caller
  // may move entries, messages and committed entries out of the Ready (e.g.
  // into storage) before calling it.
  void Advance(const Ready& rd);

  NodeStatus GetStatus() const;
  // True while this node is a voter or learner of the configuration it has
  // applied. A node that applied its own removal reports false and should
  // shut down (after serving as a proxy, see ARCHITECTURE.md). A removed
  // node that never received the change keeps reporting true; it cannot
  // disrupt the cluster (pre-vote and leader leases), and the transport
  // layer tells it when peers refuse its messages.
  bool IsMember() const {
    return raft_->tracker().progress.count(raft_->id()) > 0;
  }
  uint64_t id() const { return raft_->id(); }
  // Read-only access for tests, the simulator and invariant checkers.
  const Raft& raft() const { return *raft_; }

 private:
  explicit RawNode(std::unique_ptr<Raft> r);
  void MaybeCheckInvariants() const;
  absl::Status StepLocal(Message m);

  std::unique_ptr<Raft> raft_;
  SoftState prev_soft_state_;
  HardState prev_hard_state_;
  bool ready_outstanding_ = false;
  // What the outstanding Ready asked for, recorded by GetReady.
  struct ReadyRecord {
    uint64_t last_entry_index = 0;
    uint64_t last_entry_term = 0;
    uint64_t snapshot_index = 0;
    uint64_t last_committed_index = 0;
    uint64_t committed_bytes = 0;
  };
  ReadyRecord record_;
};

// The initial state of a brand-new cluster member: the voter set as a
// ConfState plus one AddNode conf change entry per voter at term 1, all
// committed. Replaying the entries rebuilds the configuration, so nodes
// added later learn the initial membership from the log. Errors:
// kInvalidArgument for an empty voter set. `contexts` optionally gives each
// voter's conf change its context (e.g. the member's name and URLs, so every
// member, including ones that join later and replay the log, learns them).
struct BootstrapImage {
  ConfState conf_state;
  std::vector<Entry> entries;
  HardState hard_state;
};
absl::StatusOr<BootstrapImage> MakeBootstrapImage(
    std::vector<uint64_t> voters,
    const std::map<uint64_t, std::string>& contexts = {});

// Writes the initial state of a brand-new cluster member into `storage`:
// the voter set as a ConfState plus one AddNode conf change entry per voter
// at term 1, committed. Replaying the entries rebuilds the configuration,
// so nodes added later learn the initial membership from the log.
absl::Status BootstrapStorage(MemoryStorage* storage,
                              const std::vector<uint64_t>& voters);

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_CORE_RAW_NODE_H_
