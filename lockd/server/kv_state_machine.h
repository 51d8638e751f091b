// The replicated state machine of a member: applies committed log entries to
// the MVCC store and answers the clients waiting for them.
//
// Apply() runs on the raft node's thread; Register()/Cancel() on gRPC
// threads. Each committed batch is one ApplyBatch, committed together with
// the raft index of its last entry.
#ifndef LOCKD_SERVER_KV_STATE_MACHINE_H_
#define LOCKD_SERVER_KV_STATE_MACHINE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "etcdserverpb/rpc.pb.h"
#include "kv/lease/lessor.h"
#include "kv/mvcc/store.h"
#include "kv/watch/hub.h"
#include "lockd/server/membership.h"
#include "lockd/util/metrics.h"
#include "lockdpb/internal.pb.h"
#include "raft/node/node.h"

namespace lockd {

// What applying one command produced: exactly one response is set, or
// `status` holds the command's error.
struct ApplyResult {
  absl::Status status;
  etcdserverpb::PutResponse put;
  etcdserverpb::DeleteRangeResponse delete_range;
  etcdserverpb::TxnResponse txn;
  etcdserverpb::CompactionResponse compaction;
  etcdserverpb::AlarmResponse alarm;
  // Membership changes: the member table after the change.
  MemberList members;
  etcdserverpb::LeaseGrantResponse lease_grant;
  etcdserverpb::LeaseRevokeResponse lease_revoke;
};

class KvStateMachine final : public raft::StateMachine {
 public:
  // `membership` (may be null in tests of the KV path alone) is kept in step
  // with applied membership entries.
  KvStateMachine(uint64_t member_id, kv::MvccStore* store,
                 Membership* membership = nullptr)
      : member_id_(member_id), store_(store), membership_(membership) {}

  // Leases are applied by `lessor`, which also tells Puts which leases
  // exist. Call before the node starts; without it every lease is unknown.
  void AttachLessor(kv::Lessor* lessor) { lessor_ = lessor; }

  // raft::StateMachine.
  uint64_t AppliedIndex() const override { return store_->applied_index(); }
  absl::Status Apply(const std::vector<raft::Entry>& entries) override;
  absl::Status Sync() override { return store_->Sync(); }
  // Installs the store checkpoint in the staging directory `snapshot.data`
  // (made by SnapshotIo) with MvccStore::Restore, unless the store is
  // already at or past it; then runs the restore listeners.
  absl::Status Restore(const raft::Snapshot& snapshot) override;
  void DiscardSnapshot(const std::string& data) override;

  // Where received snapshot images are staged (SnapshotIo::dir()); only
  // directories under it are ever installed or removed.
  void SetSnapshotDir(std::string dir) { snapshot_dir_ = std::move(dir); }

  // Runs `listener` on the apply thread after every snapshot install, once
  // the new store is in place: in-memory state derived from the store (the
  // lease table, the watch hub) reloads from it there. Call before the node
  // starts.
  void AddRestoreListener(std::function<void()> listener) {
    restore_listeners_.push_back(std::move(listener));
  }

  // Runs `listener` on the apply thread after each committed batch that
  // produced events, with the batch's events (in revision order, with
  // prev_kv) and the store revision after it; readers of the store already
  // see the batch. Listeners must not block or call back into the state
  // machine: they note what happened and wake their own threads. Not called
  // for snapshot installs (use AddRestoreListener). Call before the node
  // starts.
  using CommitListener = std::function<void(
      const std::vector<mvccpb::Event>& events, int64_t revision)>;
  void AddCommitListener(CommitListener listener) {
    commit_listeners_.push_back(std::move(listener));
  }

  // Arranges for `done` to run (on the apply thread) with the result of the
  // command with this id once applied. Call before proposing. A waiter
  // still pending at `deadline` is answered by ExpireWaiters instead.
  //
  // With a `term` (not 0), the command must be proposed so that it can only
  // be appended in that term (RaftNode::ProposeAsync's `term`). Then, once
  // this member applies an entry of a later term without having applied
  // the command, it never will (terms never decrease along the committed
  // log), and `done` gets kUnavailable "etcdserver: leader changed" at once:
  // the client can place the write again, where it would otherwise wait out
  // its deadline. A snapshot install clears the term (its entries are not
  // seen one by one).
  void Register(uint64_t id, std::function<void(ApplyResult)> done,
                absl::Time deadline = absl::InfiniteFuture(),
                uint64_t term = 0);
  // Answers every waiter whose deadline is before `now` with kUnavailable
  // "etcdserver: request timed out" (the command may still apply later, as
  // with etcd). Runs `done` on the calling thread.
  void ExpireWaiters(absl::Time now);
  // Forgets a registration (the client gave up). True when it was still
  // pending: then `done` will never run, and the caller answers instead.
  bool Cancel(uint64_t id);
  // For a waiter still pending: from now on it ends at `deadline`, and if it
  // gets there before this member applies its command, `done` gets
  // `on_expiry` instead of the timeout; its term no longer matters. A
  // follower keeps the waiter of a lease command the leader has answered
  // this way, so that the client hears back once this member has applied
  // the command too (a lease command need not change the revision
  // WhenApplied waits for). False when it is no longer pending.
  bool Rearm(uint64_t id, absl::Time deadline, ApplyResult on_expiry);
  // The same for a command another member proposed through this one, the
  // leader (see forwarding.h): `done` gets its result when this member
  // applies it. A registration still pending at `deadline` is dropped by
  // ExpireWaiters without a call.
  void RegisterForwarded(uint64_t origin, uint64_t id,
                         std::function<void(ApplyResult)> done,
                         absl::Time deadline);
  void CancelForwarded(uint64_t origin, uint64_t id);
  // Runs `run` once this member's store is at `revision` or later (at once
  // if it is), or at `deadline` (by ExpireWaiters) if it gets there no
  // sooner: a member removed before applying it, or far behind. A follower
  // answers a write the leader applied for it this way, so that what the
  // client reads from this member next includes the write, as with etcd.
  // `run` runs on the apply thread, the caller's or ExpireWaiters'; it must
  // not block.
  void WhenApplied(int64_t revision, absl::Time deadline,
                   std::function<void()> run);
  // Runs every pending WhenApplied now (this member will apply nothing
  // more: it was removed).
  void ReleaseRevisionWaits();
  // Commands of this member's clients waiting for their result
  // (etcd_server_proposals_pending).
  size_t PendingProposals();
  // Counts the commands that failed for want of consensus, "leader changed"
  // or "request timed out" (etcd_server_proposals_failed_total); may be
  // null. Set before the node starts.
  void set_proposals_failed(metrics::Counter* counter) {
    proposals_failed_ = counter;
  }
  // Each committed batch's events go to `hub` (set before the node starts).
  void set_watch_hub(kv::WatchHub* hub) { watch_hub_ = hub; }

 private:
  const uint64_t member_id_;
  kv::MvccStore* store_;
  Membership* membership_;
  kv::Lessor* lessor_ = nullptr;
  std::string snapshot_dir_;  // set before the node starts
  std::vector<std::function<void()>> restore_listeners_;  // apply thread
  kv::WatchHub* watch_hub_ = nullptr;
  metrics::Counter* proposals_failed_ = nullptr;
  std::vector<CommitListener> commit_listeners_;  // apply thread
  absl::Mutex mu_;
  struct Waiter {
    std::function<void(ApplyResult)> done;
    absl::Time deadline;
    uint64_t term = 0;                     // see Register
    std::optional<ApplyResult> on_expiry;  // see Rearm
  };
  // The term of the last entry applied (or of the last snapshot installed).
  uint64_t applied_term_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  struct RevisionWait {
    std::function<void()> done;
    absl::Time deadline;
  };
  std::multimap<int64_t, RevisionWait> revision_waits_ ABSL_GUARDED_BY(mu_);
  // Moves out the runs of the waits the store at `revision` satisfies.
  void TakeRevisionWaits(int64_t revision,
                         std::vector<std::function<void()>>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // By (origin member, id).
  std::map<std::pair<uint64_t, uint64_t>, Waiter> forwarded_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace lockd

#endif  // LOCKD_SERVER_KV_STATE_MACHINE_H_
