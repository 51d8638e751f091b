#include "lockd/server/kv_state_machine.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kv/mvcc/errors.h"
#include "kv/snapshot/archive.h"
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
  std::unique_ptr<kv::ApplyBatch> batch = store_->BeginApply(
      lessor_ != nullptr ? static_cast<const kv::LeaseOracle*>(lessor_)
                         : &kNoLeases);
  // Results are handed to waiters only after the batch is durable in the
  // store (so a client never sees a write a reader on this member can't).
  std::vector<std::pair<uint64_t, ApplyResult>> mine;
  // Results of other members' commands this member (their leader) proposed
  // for them, only while any wait.
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, ApplyResult>> theirs;
  bool any_forwarded;
  {
    absl::MutexLock lock(&mu_);
    any_forwarded = !forwarded_.empty();
  }
  // The member table, copied only for a batch that touches membership
  // (rare), never on every apply.
  std::optional<MemberList> table;
  auto members = [&]() -> MemberList& {
    if (!table.has_value()) {
      table = membership_ != nullptr ? membership_->Members() : MemberList();
    }
    return *table;
  };
  bool table_changed = false;
  for (const raft::Entry& e : entries) {
    if (e.index <= already) continue;
    if (e.type == raft::EntryType::kConfChange) {
      // The node applied it to raft already (a change raft rejected reaches
      // us as an empty normal entry).
      absl::StatusOr<raft::ConfChange> cc = raft::DecodeConfChange(e.data);
      internal::MemberChange context;
      if (!cc.ok() ||
          (!cc->context.empty() && !context.ParseFromString(cc->context))) {
        Logf(LogLevel::kError, "apply",
             "conf change entry %d has a context this lockd cannot read; "
             "the member table skips it",
             e.index);
        continue;
      }
      if (membership_ == nullptr) continue;
      ApplyConfChangeToTable(*cc, context, &members());
      table_changed = true;
      if (context.origin_member() == member_id_ && context.id() != 0) {
        ApplyResult r;
        r.members = members();
        mine.emplace_back(context.id(), std::move(r));
      }
      continue;
    }
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
      case internal::Request::kMemberUpdate:
      case internal::Request::kMemberAttributes: {
        const uint64_t id = req.has_member_update()
                                ? req.member_update().id()
                                : req.member_attributes().id();
        MemberList& t = members();
        auto it = std::find_if(t.begin(), t.end(),
                               [id](const auto& m) { return m.id() == id; });
        if (it == t.end()) {
          r.status = absl::NotFoundError("etcdserver: member not found");
        } else if (req.has_member_update()) {
          it->mutable_peerurls()->CopyFrom(req.member_update().peerurls());
        } else {
          it->set_name(req.member_attributes().name());
          it->mutable_clienturls()->CopyFrom(
              req.member_attributes().clienturls());
        }
        if (r.status.ok()) table_changed = true;
        r.members = t;
        break;
      }
      case internal::Request::kLeaseGrant:
        // As etcd's appliers: no grant while the data is corrupt or the
        // space quota is exceeded.
        r.status = batch->HasAlarm(etcdserverpb::CORRUPT)   ? kv::ErrCorrupt()
                   : batch->HasAlarm(etcdserverpb::NOSPACE) ? kv::ErrNoSpace()
                   : lessor_ == nullptr
                       ? kv::ErrLeaseNotFound()
                       : lessor_->ApplyGrant(batch.get(), req.lease_grant(),
                                             &r.lease_grant);
        break;
      case internal::Request::kLeaseRevoke:
        r.status = batch->HasAlarm(etcdserverpb::CORRUPT) ? kv::ErrCorrupt()
                   : lessor_ == nullptr
                       ? kv::ErrLeaseNotFound()
                       : lessor_->ApplyRevoke(batch.get(), req.lease_revoke(),
                                              &r.lease_revoke);
        break;
      case internal::Request::kLeaseCheckpoint:
        if (lessor_ != nullptr) {
          lessor_->ApplyCheckpoint(batch.get(), req.lease_checkpoint());
        }
        break;
      default:
        r.status = absl::InvalidArgumentError("empty command");
        break;
    }
    if (req.origin_member() == member_id_) {
      mine.emplace_back(req.id(), std::move(r));
    } else if (any_forwarded) {
      theirs.emplace_back(std::make_pair(req.origin_member(), req.id()),
                          std::move(r));
    }
  }
  if (table_changed) {
    batch->PutRecord(kMembersRecord, EncodeMemberTable(*table));
  }
  // Taken once per batch, so each consumer sees every event exactly once.
  std::vector<mvccpb::Event> events;
  if (watch_hub_ != nullptr || !commit_listeners_.empty()) {
    events = batch->TakeEvents();
  }
  const int64_t revision = batch->revision();
  if (absl::Status s = batch->Commit(entries.back().index); !s.ok()) return s;
  // Consumers see a batch only once readers can (as clients' answers do).
  if (!events.empty()) {
    for (const auto& listener : commit_listeners_) listener(events, revision);
  }
  if (table_changed && membership_ != nullptr) {
    membership_->Replace(*std::move(table));
  }
  // The waiters of this batch's results, taken under one lock and run
  // outside it.
  std::vector<std::pair<std::function<void(ApplyResult)>, ApplyResult>> ready;
  std::vector<std::function<void()>> caught_up;
  {
    absl::MutexLock lock(&mu_);
    TakeRevisionWaits(revision, &caught_up);
    auto take = [&ready](auto& waiters, const auto& key, ApplyResult& result) {
      auto it = waiters.find(key);
      if (it == waiters.end()) return;
      ready.emplace_back(std::move(it->second.done), std::move(result));
      waiters.erase(it);
    };
    for (auto& [id, result] : mine) take(waiters_, id, result);
    for (auto& [key, result] : theirs) take(forwarded_, key, result);
    // A command proposed in a term before the last entry's was not in this
    // batch or an earlier one, so it never applies (see Register).
    const uint64_t term = entries.back().term;
    if (term > applied_term_) {
      applied_term_ = term;
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->second.term == 0 || it->second.term >= term) {
          ++it;
          continue;
        }
        ApplyResult lost;
        lost.status = absl::UnavailableError("etcdserver: leader changed");
        if (proposals_failed_ != nullptr) proposals_failed_->Inc();
        ready.emplace_back(std::move(it->second.done), std::move(lost));
        it = waiters_.erase(it);
      }
    }
  }
  for (auto& [done, result] : ready) done(std::move(result));
  for (auto& run : caught_up) run();
  // The watchers after the writers' answers: the hub may hand a small batch
  // to the watch streams right here, on this thread, and the answers need
  // not wait for it. (A watch created meanwhile still starts after what its
  // client saw acknowledged: the hub reads "now" from the store.)
  if (watch_hub_ != nullptr) watch_hub_->Publish(std::move(events));
  return absl::OkStatus();
}

absl::Status KvStateMachine::Restore(const raft::Snapshot& snapshot) {
  const std::string& dir = snapshot.data;
  if (snapshot_dir_.empty() || !absl::StartsWith(dir, snapshot_dir_ + "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot image '", dir, "' is not a staged snapshot"));
  }
  absl::StatusOr<uint64_t> image = kv::MvccStore::CheckpointAppliedIndex(dir);
  if (!image.ok()) return image.status();
  if (*image < snapshot.metadata.index) {
    return absl::DataLossError(absl::StrCat(
        "the snapshot image is at index ", *image,
        ", behind the snapshot it came with (", snapshot.metadata.index, ")"));
  }
  const uint64_t before = store_->applied_index();
  if (*image <= before) {
    // Already there (e.g. installed before a crash that came before the raft
    // log recorded the snapshot): the entries after it replay as usual.
    Logf(LogLevel::kInfo, "apply",
         "the key-value store is at index %d, not behind the snapshot image "
         "(%d): keeping it",
         before, *image);
    return absl::OkStatus();
  }
  if (absl::Status s = store_->Restore(dir); !s.ok()) return s;
  std::vector<std::function<void()>> caught_up;
  {
    // The image holds entries this member never saw one by one: whether a
    // waiter's is among them is unknown, so none fails for its term now.
    absl::MutexLock lock(&mu_);
    for (auto& [id, waiter] : waiters_) waiter.term = 0;
    applied_term_ = std::max(applied_term_, snapshot.metadata.term);
    TakeRevisionWaits(store_->revision(), &caught_up);
  }
  for (auto& run : caught_up) run();
  Logf(LogLevel::kInfo, "apply",
       "replaced the key-value store from a snapshot: index %d -> %d, "
       "revision %d",
       before, *image, store_->revision());
  for (const auto& listener : restore_listeners_) listener();
  return absl::OkStatus();
}

void KvStateMachine::DiscardSnapshot(const std::string& data) {
  if (snapshot_dir_.empty() || !absl::StartsWith(data, snapshot_dir_ + "/")) {
    return;
  }
  kv::RemoveFlatDir(data);
}

void KvStateMachine::Register(uint64_t id,
                              std::function<void(ApplyResult)> done,
                              absl::Time deadline, uint64_t term) {
  absl::MutexLock lock(&mu_);
  waiters_[id] = Waiter{std::move(done), deadline, term, std::nullopt};
}

void KvStateMachine::ExpireWaiters(absl::Time now) {
  std::vector<Waiter> expired;
  // Dropped outside the lock: their captures may take other locks.
  std::vector<Waiter> dropped;
  // Revision waits past their deadline run anyway.
  std::vector<RevisionWait> late;
  {
    absl::MutexLock lock(&mu_);
    auto take_expired = [now](auto& waiters, auto* out) {
      for (auto it = waiters.begin(); it != waiters.end();) {
        if (it->second.deadline < now) {
          out->push_back(std::move(it->second));
          it = waiters.erase(it);
        } else {
          ++it;
        }
      }
    };
    take_expired(waiters_, &expired);
    take_expired(forwarded_, &dropped);
    take_expired(revision_waits_, &late);
  }
  for (RevisionWait& wait : late) wait.done();
  for (Waiter& waiter : expired) {
    if (waiter.on_expiry.has_value()) {
      waiter.done(*std::move(waiter.on_expiry));
      continue;
    }
    ApplyResult r;
    r.status = absl::UnavailableError("etcdserver: request timed out");
    if (proposals_failed_ != nullptr) proposals_failed_->Inc();
    waiter.done(std::move(r));
  }
}

bool KvStateMachine::Rearm(uint64_t id, absl::Time deadline,
                           ApplyResult on_expiry) {
  absl::MutexLock lock(&mu_);
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return false;
  it->second.deadline = deadline;
  it->second.term = 0;
  it->second.on_expiry = std::move(on_expiry);
  return true;
}

size_t KvStateMachine::PendingProposals() {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

bool KvStateMachine::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return waiters_.erase(id) > 0;
}

void KvStateMachine::RegisterForwarded(uint64_t origin, uint64_t id,
                                       std::function<void(ApplyResult)> done,
                                       absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  forwarded_[{origin, id}] =
      Waiter{std::move(done), deadline, /*term=*/0, std::nullopt};
}

void KvStateMachine::WhenApplied(int64_t revision, absl::Time deadline,
                                 std::function<void()> run) {
  {
    // Apply takes the waits under this lock after its commit, so a wait is
    // either seen by the next Apply or satisfied already.
    absl::MutexLock lock(&mu_);
    if (store_->revision() < revision) {
      revision_waits_.emplace(revision, RevisionWait{std::move(run), deadline});
      return;
    }
  }
  run();
}

void KvStateMachine::ReleaseRevisionWaits() {
  std::vector<std::function<void()>> runs;
  {
    absl::MutexLock lock(&mu_);
    TakeRevisionWaits(std::numeric_limits<int64_t>::max(), &runs);
  }
  for (auto& run : runs) run();
}

void KvStateMachine::TakeRevisionWaits(
    int64_t revision, std::vector<std::function<void()>>* out) {
  auto end = revision_waits_.upper_bound(revision);
  for (auto it = revision_waits_.begin(); it != end; ++it) {
    out->push_back(std::move(it->second.done));
  }
  revision_waits_.erase(revision_waits_.begin(), end);
}

void KvStateMachine::CancelForwarded(uint64_t origin, uint64_t id) {
  absl::MutexLock lock(&mu_);
  forwarded_.erase({origin, id});
}

}  // namespace lockd
