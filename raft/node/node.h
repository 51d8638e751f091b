// RaftNode: the one loop that drives the Raft core for a running member.
//
// It owns the core (RawNode) and a thread that, in this order: takes inputs
// (peer messages, proposals, read requests) from a bounded inbox, proposing
// consecutive proposals as one batch of entries, ticks on a real clock, and
// handles each Ready as the core requires: the leader's
// appends go out first, then the Ready is persisted in one synced write
// (DiskStorage::Save), then the remaining messages go out, committed entries
// are applied through the StateMachine, read states are answered, and the
// core is advanced.
//
// Log compaction: once `snapshot_count` entries were applied since the last
// snapshot, the node makes the state machine durable (Sync) and records a
// raft snapshot at the applied index in the log storage, keeping the last
// `snapshot_catchup_entries` entries for followers that are only a little
// behind. The snapshot carries only metadata; the state itself is the state
// machine's store, which the transport copies when a follower needs it.
//
// Installing a received snapshot (a Ready with `snapshot`), in this order:
//   1. StateMachine::Restore makes the image the state machine's durable
//      state (its applied index A >= the snapshot's index S).
//   2. The log storage records the snapshot and drops the log (one synced
//      write, with the Ready's hard state and entries).
// A crash after 1 and before 2 leaves a state machine ahead of the log's
// commit index: on restart the core starts from min(applied, commit), the
// state machine skips entries it already holds, and the leader sends
// entries or a snapshot again. A crash before 1 leaves the old state. The
// other order could leave a log that no longer holds the entries the old
// state machine needs.
//
// Everything nondeterministic the core needs (time, network, disk) enters
// here. Thread safety: all public methods are thread-safe; the StateMachine
// is called only from the node's thread.
#ifndef LOCKD_RAFT_NODE_NODE_H_
#define LOCKD_RAFT_NODE_NODE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "lockd/util/clock.h"
#include "lockd/util/metrics.h"
#include "lockd/util/timed_loop.h"
#include "raft/core/raw_node.h"
#include "raft/storage/disk_storage.h"
#include "raft/transport/transport.h"

namespace lockd::raft {

// The replicated state machine, as the node sees it. Called only from the
// node's thread.
class StateMachine {
 public:
  virtual ~StateMachine() = default;
  // Index of the last entry applied and durable in the state machine's own
  // storage; the node resumes applying after it on restart.
  virtual uint64_t AppliedIndex() const = 0;
  // Applies committed entries in index order. Conf-change entries are
  // included (the node has already applied them to the core) so the state
  // machine's applied index covers every entry; one the core rejected
  // arrives as an empty normal entry. An error means the state
  // machine's storage failed: the process aborts (continuing could
  // acknowledge writes that were never stored).
  virtual absl::Status Apply(const std::vector<Entry>& entries) = 0;

  // Makes everything applied so far durable; called before the log forgets
  // the entries behind it. An error stops the compaction (not the node).
  virtual absl::Status Sync() { return absl::OkStatus(); }

  // Replaces the whole state with a received snapshot's image, durably,
  // before returning. `snapshot.data` is the local descriptor the
  // transport's SnapshotIo produced. An image at or behind AppliedIndex()
  // may be ignored. An error stops the process (the core already moved on).
  virtual absl::Status Restore(const Snapshot& snapshot) {
    return absl::UnimplementedError(
        "this state machine cannot install "
        "snapshots");
  }

  // Frees the local image of a received snapshot (installed or not).
  // Idempotent. Thread-safe: also called from transport threads when a
  // snapshot message is dropped.
  virtual void DiscardSnapshot(const std::string& data) {}
};

struct NodeOptions {
  uint64_t id = 0;
  absl::Duration tick_interval = absl::Milliseconds(100);
  int election_tick = 10;
  int heartbeat_tick = 1;
  bool pre_vote = true;
  bool check_quorum = true;
  uint64_t max_uncommitted_bytes = 64 << 20;
  uint64_t max_size_per_msg_bytes = 1 << 20;
  int max_inflight_msgs = 256;
  // Inputs waiting for the loop; beyond this, proposals are refused and
  // peer messages dropped.
  size_t inbox_max = 16384;
  uint64_t seed = 1;
  // A new cluster's voters: when the log is empty, it is bootstrapped with
  // them. Empty for a member joining an existing cluster.
  std::vector<uint64_t> bootstrap_voters;
  // Context of each bootstrap voter's conf change entry (see
  // MakeBootstrapImage).
  std::map<uint64_t, std::string> bootstrap_contexts;
  // See WaitForLeader. Zero: three election timeouts.
  absl::Duration leaderless_wait_max = absl::ZeroDuration();
  // A member added to a running cluster: it starts with an empty log and
  // configuration and learns both from the leader.
  bool join_existing = false;
  // Compact the log after this many applied entries (etcd's
  // --snapshot-count); 0 never compacts.
  uint64_t snapshot_count = 100000;
  // Entries kept behind a compaction, so a follower that is only a little
  // behind catches up from the log rather than a snapshot.
  uint64_t snapshot_catchup_entries = 5000;
  // etcd_server_leader_changes_seen_total: each time this member learns of
  // a leader other than the one it knew (not of losing one). Null: none.
  metrics::Counter* leader_changes = nullptr;
  // etcd_server_slow_apply_total: applies of committed entries that took
  // longer than 100 ms (etcd's warning threshold). Null: none.
  metrics::Counter* slow_applies = nullptr;
};

// Writes a brand-new member's log: one committed AddNode conf change entry
// per voter at term 1 (see MakeBootstrapImage), synced. RaftNode::Create
// does this itself for an empty log with bootstrap_voters; a restore that
// prepares a data directory offline calls it directly.
absl::Status BootstrapLog(DiskStorage* storage, std::vector<uint64_t> voters,
                          const std::map<uint64_t, std::string>& contexts);

class RaftNode final : public MessageHandler {
 public:
  // `storage`, `transport` and `state_machine` must outlive the node.
  static absl::StatusOr<std::unique_ptr<RaftNode>> Create(
      const NodeOptions& options, DiskStorage* storage, Transport* transport,
      StateMachine* state_machine);
  ~RaftNode() override;  // Stop()s

  void Start();
  // Stops the loop; pending callers get kUnavailable. Idempotent.
  void Stop();

  // Hands `data` to the core for replication. OK means the leader appended
  // it; the caller learns the outcome when the entry is applied. Errors:
  // kUnavailable (not leader; the message names the leader if known, see
  // leader()), kResourceExhausted (too many pending), kFailedPrecondition
  // (leadership transfer in progress), kDeadlineExceeded.
  //
  // With a `term` (not 0), the entry is appended only in that term: a node
  // whose term is another refuses it with kUnavailable, never appended. The
  // caller then knows that once this member applies an entry of a later
  // term without having applied this one, it never will (in a committed log
  // terms never decrease, so an entry of an ended term cannot follow one of
  // a later term).
  absl::Status Propose(std::string data, absl::Time deadline,
                       uint64_t term = 0);
  // As Propose, without blocking: `done` gets Propose's answer (errors as
  // above, without kDeadlineExceeded) exactly once, on the node's thread
  // (or on the caller's, when the node cannot queue the proposal). `done`
  // must not block or call back into the node.
  void ProposeAsync(std::string data, std::function<void(absl::Status)> done,
                    uint64_t term = 0);

  // A linearizable read barrier (ReadIndex, Raft thesis §6.4): returns once
  // this member has applied every entry committed before the call. Errors:
  // kUnavailable (no leader; or this member applied its own removal, see
  // RemovedError), kDeadlineExceeded.
  absl::Status ReadBarrier(absl::Time deadline);
  // As ReadBarrier, without blocking: `done` runs once, on the node's thread
  // (or the caller's, if the read cannot be queued), when this member has
  // applied every entry committed before the call, or with the error
  // (kUnavailable: no leader, leader changed, removed, stopped). `done`
  // must not block or call back into the node. There is no deadline, and
  // a read index request the core drops (e.g. on a leader handing over) is
  // never answered: the caller must time the read out itself.
  void ReadBarrierAsync(std::function<void(absl::Status)> done);

  // Waits until this member knows a leader (an election is under way when
  // it doesn't). An election takes one or two election timeouts; a member
  // that has had no leader for longer than NodeOptions::leaderless_wait_max
  // is cut off (partitioned, or the cluster lost quorum), and callers are
  // told at once rather than at their deadline. Errors: kUnavailable
  // "etcdserver: no leader".
  absl::Status WaitForLeader(absl::Time deadline);

  // How long this member has been without a leader (zero while it knows
  // one). Streams use it to end themselves on a cut-off member.
  absl::Duration LeaderlessFor();

  // Waits until the leader differs from the one known at the call (or the
  // deadline passes; then kDeadlineExceeded).
  absl::Status WaitForLeaderChange(absl::Time deadline);

  // Waits until the applied index reaches `index`.
  absl::Status WaitApplied(uint64_t index, absl::Time deadline);

  // Proposes a membership change (leader only). OK means appended; the
  // change takes effect when the entry is applied. Errors, and `term`, as
  // Propose.
  absl::Status ProposeConfChange(const ConfChange& cc, absl::Time deadline,
                                 uint64_t term = 0);

  // The core's status, including (on the leader) every peer's replication
  // progress. Errors: kUnavailable (stopped), kDeadlineExceeded.
  absl::StatusOr<NodeStatus> Status(absl::Time deadline);

  // Asks the leader to hand leadership to `transferee`.
  absl::Status TransferLeadership(uint64_t transferee, absl::Time deadline);

  // MessageHandler, for the transport.
  absl::Status CheckPeer(uint64_t from) override;
  void Deliver(std::vector<Message> messages) override;

  uint64_t id() const { return options_.id; }
  uint64_t leader() const { return leader_.load(); }
  // Whether this member has applied its own removal from the cluster (it
  // applies nothing after that).
  bool removed() const { return removed_for_waiters_.load(); }
  bool is_leader() const { return leader_.load() == options_.id; }
  uint64_t term() const { return term_.load(); }
  uint64_t commit_index() const { return commit_.load(); }
  uint64_t applied_index() const { return applied_.load(); }
  // Snapshots installed from the leader, and log compactions, since start.
  uint64_t snapshots_installed() const { return snapshots_installed_.load(); }
  uint64_t log_compactions() const { return log_compactions_.load(); }

 private:
  struct Input {
    enum Kind {
      kMessage,
      kPropose,
      kRead,
      kTransfer,
      kConfChange,
      kStatus
    } kind;
    Message message;
    std::string data;
    ConfChange conf_change;
    // Where kStatus puts the status before calling done.
    std::shared_ptr<NodeStatus> status_out;
    uint64_t target = 0;
    // kPropose, kConfChange: the only term it may be appended in (0: any).
    uint64_t term = 0;
    // Completion for kPropose/kTransfer (status) and kRead (status + index).
    std::function<void(absl::Status, uint64_t)> done;
  };

  RaftNode(const NodeOptions& options, DiskStorage* storage,
           Transport* transport, StateMachine* state_machine);
  absl::Status Enqueue(Input input);
  // Runs `kind` through the loop and waits for its completion.
  absl::StatusOr<uint64_t> Call(Input input, absl::Time deadline);
  void Run();
  // Handles one pass's inputs in order; consecutive proposals go to
  // ProposeRun together.
  void HandleInputs(std::deque<Input>& inputs);
  void HandleInput(Input& input);
  // Proposes `run` (kPropose inputs) as one batch of entries, in order
  // (those bound to an ended term are refused), and completes each with
  // the result.
  void ProposeRun(absl::Span<Input* const> run);
  // For a proposal bound to a term that is not the core's: the refusal.
  std::optional<absl::Status> TermEnded(const Input& input) const;
  // False on a fatal storage/apply failure.
  bool HandleReady(Ready rd);
  // Step 1 of installing a snapshot (see the top of this file); false on
  // a fatal failure.
  bool InstallSnapshot(const Snapshot& snapshot);
  // Compacts the log when snapshot_count entries were applied since the
  // last snapshot.
  void MaybeCompactLog();
  void FailPending(const absl::Status& status);
  // Frees the images of snapshot messages that will never reach the core.
  void DiscardSnapshots(const std::deque<Input>& inputs);

  NodeOptions options_;
  DiskStorage* storage_;
  Transport* transport_;
  StateMachine* state_machine_;
  std::unique_ptr<RawNode> raw_;  // node thread only
  std::thread thread_;
  // Raises tick_due_ every tick_interval, on the monotonic clock (see Run).
  TimedLoop ticker_;
  uint64_t next_read_ctx_ = 1;  // node thread only
  // ReadIndex requests in flight, by context; node thread only.
  std::map<std::string,
           std::vector<std::function<void(absl::Status, uint64_t)>>>
      reads_;
  // The ReadIndex context the reads of the current input batch share
  // (empty between batches); node thread only.
  std::string read_batch_ctx_;
  // ReadBarrierAsync callers whose read index is confirmed, by the index
  // they wait to see applied; node thread only (and Stop, after it).
  std::multimap<uint64_t, std::function<void(absl::Status)>> applied_waiters_;
  // Runs the applied_waiters_ that `applied` covers.
  void FireAppliedWaiters(uint64_t applied);
  // After applying a snapshot or conf change: once this member has applied
  // its own removal, fails pending reads and read waiters (the leader no
  // longer replicates to it, so their read index may never be applied
  // here) and refuses new ones with RemovedError().
  void CheckRemoved();
  static absl::Status RemovedError();
  // Whether the applied configuration ever held this member, and whether
  // it has since applied its removal; node thread only.
  bool was_member_ = false;
  bool removed_ = false;
  // Index of the latest raft snapshot in the log storage; node thread only.
  uint64_t snapshot_index_ = 0;
  // Images of the snapshot messages stepped in this loop iteration, freed
  // once its Readys are handled; node thread only.
  std::vector<std::string> stepped_snapshots_;

  absl::Mutex mu_;
  std::deque<Input> inbox_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool tick_due_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t applied_for_waiters_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t leader_for_waiters_ ABSL_GUARDED_BY(mu_) = 0;
  // Set once, under mu_ (so waiters' conditions see it); read anywhere
  // (removed()).
  std::atomic<bool> removed_for_waiters_{false};
  // When leader_for_waiters_ last became 0 (the start counts).
  absl::Time leaderless_since_ ABSL_GUARDED_BY(mu_) = MonotonicNow();

  std::atomic<uint64_t> leader_{0};
  std::atomic<uint64_t> term_{0};
  std::atomic<uint64_t> commit_{0};
  std::atomic<uint64_t> applied_{0};
  std::atomic<uint64_t> snapshots_installed_{0};
  std::atomic<uint64_t> log_compactions_{0};
};

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_NODE_NODE_H_
