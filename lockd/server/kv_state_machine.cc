#include "lockd/server/kv_state_machine.h"

#include <utility>
#include <vector>

#include "lockd/util/log.h"

namespace lockd {
namespace {

// No leases exist until the lessor is replicated; every lease is unknown.
class NoLeases final : public kv::LeaseOracle {
 public:
  bool LeaseExists(int64_t) const override { return false; }
};

}  // namespace

absl::Status KvStateMachine::Apply(const std::vector<raft::Entry>& entries) {
  static const NoLeases kNoLeases;
  // Entries the store already holds (its applied index travels with its
  // data) are skipped, so replay is exactly-once by index: after a restart,
  // and after installing a snapshot newer than the log position.
  const uint64_t already = store_->applied_index();
  if (entries.back().index <= already) return absl::OkStatus();
  std::unique_ptr<kv::ApplyBatch> batch = store_->BeginApply(&kNoLeases);
  // Results are handed to waiters only after the batch is durable in the
  // store (so a client never sees a write a reader on this member can't).
  std::vector<std::pair<uint64_t, ApplyResult>> mine;
  for (const raft::Entry& e : entries) {
    if (e.index <= already) continue;
    if (e.type != raft::EntryType::kNormal || e.data.empty()) continue;
    internal::Request req;
    if (!req.ParseFromString(e.data) || req.version() != 1) {
      // Every member sees the same bytes, so every member skips it alike.
      Logf(LogLevel::kError, "apply",
           "entry %d is not a command this lockd understands (version %d); "
           "skipped",
           e.index, req.version());
      continue;
    }
    ApplyResult r;
    switch (req.op_case()) {
      case internal::Request::kPut:
        r.status = batch->Put(req.put(), &r.put);
        break;
      case internal::Request::kDeleteRange:
        r.status = batch->DeleteRange(req.delete_range(), &r.delete_range);
        break;
      case internal::Request::kTxn:
        r.status = batch->Txn(req.txn(), &r.txn);
        break;
      case internal::Request::kCompaction:
        r.status = batch->Compact(req.compaction(), &r.compaction);
        break;
      case internal::Request::kAlarm:
        r.status = batch->Alarm(req.alarm(), &r.alarm);
        break;
      default:
        r.status = absl::InvalidArgumentError("empty command");
        break;
    }
    if (req.origin_member() == member_id_) {
      mine.emplace_back(req.id(), std::move(r));
    }
  }
  std::vector<mvccpb::Event> events;
  if (watch_hub_ != nullptr) events = batch->TakeEvents();
  if (absl::Status s = batch->Commit(entries.back().index); !s.ok()) return s;
  // Watchers see a batch only once readers can (same as clients' answers).
  if (watch_hub_ != nullptr) watch_hub_->Publish(std::move(events));
  for (auto& [id, result] : mine) {
    std::function<void(ApplyResult)> done;
    {
      absl::MutexLock lock(&mu_);
      auto it = waiters_.find(id);
      if (it == waiters_.end()) continue;
      done = std::move(it->second);
      waiters_.erase(it);
    }
    done(std::move(result));
  }
  return absl::OkStatus();
}

void KvStateMachine::Register(uint64_t id,
                              std::function<void(ApplyResult)> done) {
  absl::MutexLock lock(&mu_);
  waiters_[id] = std::move(done);
}

void KvStateMachine::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  waiters_.erase(id);
}

}  // namespace lockd
