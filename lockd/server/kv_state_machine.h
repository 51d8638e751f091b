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

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "etcdserverpb/rpc.pb.h"
#include "kv/mvcc/store.h"
#include "kv/watch/hub.h"
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
};

class KvStateMachine final : public raft::StateMachine {
 public:
  KvStateMachine(uint64_t member_id, kv::MvccStore* store)
      : member_id_(member_id), store_(store) {}

  // raft::StateMachine.
  uint64_t AppliedIndex() const override { return store_->applied_index(); }
  absl::Status Apply(const std::vector<raft::Entry>& entries) override;

  // Arranges for `done` to run (on the apply thread) with the result of the
  // command with this id once applied. Call before proposing.
  void Register(uint64_t id, std::function<void(ApplyResult)> done);
  // Forgets a registration (the client gave up).
  void Cancel(uint64_t id);
  // Each committed batch's events go to `hub` (set before the node starts).
  void set_watch_hub(kv::WatchHub* hub) { watch_hub_ = hub; }

 private:
  const uint64_t member_id_;
  kv::MvccStore* store_;
  kv::WatchHub* watch_hub_ = nullptr;
  absl::Mutex mu_;
  std::map<uint64_t, std::function<void(ApplyResult)>> waiters_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace lockd

#endif  // LOCKD_SERVER_KV_STATE_MACHINE_H_
