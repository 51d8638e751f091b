#include "kv/lease/lessor.h"

#include <algorithm>
#include <utility>

#include "kv/mvcc/errors.h"
#include "lockd/util/clock.h"

namespace lockd::kv {
namespace {

LessorOptions WithClock(LessorOptions options) {
  if (!options.now) options.now = &MonotonicNow;
  return options;
}

}  // namespace

Lessor::Lessor(MvccStore* store, LessorOptions options)
    : store_(store), options_(WithClock(std::move(options))) {}

std::string Lessor::Record(int64_t id, const Lease& l) {
  internal::LeaseRecord r;
  r.set_id(id);
  r.set_ttl(l.ttl_s);
  r.set_remaining_ms(l.remaining_ms);
  return r.SerializeAsString();
}

void Lessor::SetPrimaryExpiry(Lease& l, absl::Time now) {
  const int64_t remaining_ms =
      l.remaining_ms > 0 ? l.remaining_ms : l.ttl_s * 1000;
  l.expiry = now + absl::Milliseconds(remaining_ms) + options_.grace;
  l.checkpointed_at = now;
  l.revoke_after = absl::InfinitePast();
  l.renewed_at = absl::InfinitePast();
  // Only this leadership's own records cover its acknowledgements.
  l.covered_until = absl::InfinitePast();
}

absl::Status Lessor::ReloadFromStore(MvccStore* replacement) {
  if (replacement != nullptr) store_ = replacement;
  std::vector<std::pair<int64_t, std::string>> records;
  if (absl::Status s = store_->LeaseRecords(&records); !s.ok()) return s;
  std::map<int64_t, Lease> leases;
  for (const auto& [id, bytes] : records) {
    internal::LeaseRecord r;
    if (!r.ParseFromString(bytes) || r.id() != id) {
      return absl::InternalError("corrupt store: lease record");
    }
    Lease l;
    l.ttl_s = r.ttl();
    l.remaining_ms = r.remaining_ms();
    leases.emplace(id, l);
  }
  absl::MutexLock lock(&mu_);
  leases_ = std::move(leases);
  renewed_.clear();
  if (primary_) {
    const absl::Time now = Now();
    for (auto& [id, l] : leases_) SetPrimaryExpiry(l, now);
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Lessor::GrantTtl(int64_t requested_ttl_s) const {
  if (requested_ttl_s > kMaxTtlS) return ErrLeaseTTLTooLarge();
  return std::max(requested_ttl_s, options_.min_ttl_s);
}

absl::Status Lessor::ApplyGrant(ApplyBatch* batch,
                                const etcdserverpb::LeaseGrantRequest& req,
                                etcdserverpb::LeaseGrantResponse* resp) {
  if (req.id() == 0) return ErrLeaseNotFound();
  if (req.ttl() > kMaxTtlS) return ErrLeaseTTLTooLarge();
  absl::MutexLock lock(&mu_);
  if (leases_.count(req.id()) > 0) return ErrLeaseExists();
  Lease l;
  // Proposers raise the TTL to the minimum; a hand-made entry below one
  // second still gets a deterministic, positive TTL.
  l.ttl_s = std::max<int64_t>(req.ttl(), 1);
  if (primary_) {
    const absl::Time now = Now();
    l.expiry = now + absl::Seconds(l.ttl_s);
    l.checkpointed_at = now;
  }
  batch->PutLeaseRecord(req.id(), Record(req.id(), l));
  leases_.emplace(req.id(), l);
  if (options_.granted != nullptr) options_.granted->Inc();
  if (options_.ttl_seconds != nullptr) {
    options_.ttl_seconds->Observe(static_cast<double>(l.ttl_s));
  }
  resp->set_id(req.id());
  resp->set_ttl(l.ttl_s);
  resp->mutable_header()->set_revision(batch->revision());
  return absl::OkStatus();
}

absl::Status Lessor::ApplyRevoke(ApplyBatch* batch,
                                 const etcdserverpb::LeaseRevokeRequest& req,
                                 etcdserverpb::LeaseRevokeResponse* resp) {
  {
    absl::MutexLock lock(&mu_);
    if (leases_.count(req.id()) == 0) return ErrLeaseNotFound();
  }
  // The store's lock is its own; ours is not held across its I/O.
  absl::StatusOr<int64_t> deleted = batch->DeleteLeaseKeys(req.id());
  if (!deleted.ok()) return deleted.status();
  batch->DeleteLeaseRecord(req.id());
  absl::MutexLock lock(&mu_);
  leases_.erase(req.id());
  renewed_.erase(req.id());
  if (options_.revoked != nullptr) options_.revoked->Inc();
  resp->mutable_header()->set_revision(batch->revision());
  return absl::OkStatus();
}

void Lessor::ApplyCheckpoint(ApplyBatch* batch,
                             const internal::LeaseCheckpoint& checkpoint) {
  absl::MutexLock lock(&mu_);
  const bool own = primary_ && checkpoint.term() == primary_term_;
  const absl::Time now = Now();
  for (const auto& item : checkpoint.items()) {
    auto it = leases_.find(item.id());
    if (it == leases_.end() || item.remaining_ms() <= 0) continue;
    Lease& l = it->second;
    l.remaining_ms = item.remaining_ms();
    batch->PutLeaseRecord(item.id(), Record(item.id(), l));
    if (primary_ && !own) {
      // An earlier leader's renewal we had not seen when promoted.
      l.expiry = std::max(l.expiry, now + absl::Milliseconds(l.remaining_ms));
    }
  }
}

bool Lessor::LeaseExists(int64_t lease_id) const {
  absl::MutexLock lock(&mu_);
  return leases_.count(lease_id) > 0;
}

void Lessor::Promote(uint64_t term) {
  absl::MutexLock lock(&mu_);
  if (primary_ && primary_term_ == term) return;
  if (primary_) {
    // Re-elected without a Demote seen in between: start afresh, as after
    // one.
    ++epoch_;
    in_flight_seq_ = 0;
    in_flight_.clear();
  }
  primary_ = true;
  primary_term_ = term;
  const absl::Time now = Now();
  promoted_at_ = now;
  for (auto& [id, l] : leases_) SetPrimaryExpiry(l, now);
  renewed_.clear();
}

void Lessor::Demote() {
  absl::MutexLock lock(&mu_);
  if (!primary_) return;
  primary_ = false;
  primary_term_ = 0;
  // Renewals not yet checkpointed will not be answered here.
  ++epoch_;
  renewed_.clear();
  in_flight_seq_ = 0;
  in_flight_.clear();
}

bool Lessor::primary() const {
  absl::MutexLock lock(&mu_);
  return primary_;
}

absl::StatusOr<Lessor::Renewal> Lessor::Renew(int64_t lease_id) {
  absl::MutexLock lock(&mu_);
  if (!primary_) return absl::UnavailableError("etcdserver: not primary");
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return ErrLeaseNotFound();
  Lease& l = it->second;
  const absl::Time now = Now();
  // An expired lease stays expired: its revoke is (or will be) proposed.
  if (l.expiry <= now) return ErrLeaseNotFound();
  l.expiry = std::max(l.expiry, now + absl::Seconds(l.ttl_s));
  l.renewed_at = now;
  if (options_.renewed != nullptr) options_.renewed->Inc();
  if (now <= l.covered_until) return Renewal{l.ttl_s, 0, epoch_};
  ++l.renew_generation;
  renewed_.insert(lease_id);
  return Renewal{l.ttl_s, l.renew_generation, epoch_};
}

absl::Status Lessor::WaitCheckpoint(int64_t lease_id, const Renewal& renewal,
                                    absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto settled = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (epoch_ != renewal.epoch) return true;
    auto it = leases_.find(lease_id);
    return it == leases_.end() ||
           it->second.checkpointed_generation >= renewal.generation;
  };
  if (!AwaitUntil(mu_, absl::Condition(&settled), deadline)) {
    return absl::DeadlineExceededError("etcdserver: request timed out");
  }
  if (epoch_ != renewal.epoch) {
    return absl::UnavailableError("etcdserver: leader changed");
  }
  if (leases_.count(lease_id) == 0) return ErrLeaseNotFound();
  return absl::OkStatus();
}

absl::StatusOr<Lessor::Info> Lessor::TimeToLive(int64_t lease_id) const {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return ErrLeaseNotFound();
  const Lease& l = it->second;
  Info info;
  info.granted_ttl_s = l.ttl_s;
  if (primary_) {
    const absl::Duration left = l.expiry - Now();
    info.remaining_s = std::max<int64_t>(0, absl::ToInt64Seconds(left));
  } else {
    info.remaining_s = l.remaining_ms > 0 ? l.remaining_ms / 1000 : l.ttl_s;
  }
  info.remaining_s = std::min(info.remaining_s, l.ttl_s);
  return info;
}

std::vector<int64_t> Lessor::Leases() const {
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> ids;
  ids.reserve(leases_.size());
  for (const auto& [id, l] : leases_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

bool Lessor::TakeCheckpoint(bool refresh, uint64_t* seq,
                            internal::LeaseCheckpoint* checkpoint) {
  absl::MutexLock lock(&mu_);
  if (!primary_ || in_flight_seq_ != 0) return false;
  const absl::Time now = Now();
  const absl::Duration horizon = options_.ack_horizon;
  auto full = [&] {
    return static_cast<size_t>(checkpoint->items_size()) >=
           options_.checkpoint_batch_max;
  };
  auto add = [&](int64_t id, Lease& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Duration ttl = absl::Seconds(l.ttl_s);
    absl::Duration remaining = l.expiry - now;
    l.checkpointed_at = now;
    if (remaining <= absl::ZeroDuration()) return;  // its revoke says the rest
    // Active leases get a record that covers keep-alives for a while.
    if (l.renewed_at >= now - horizon) {
      remaining = std::max(remaining, ttl + horizon);
    }
    const absl::Time covers = now + remaining - ttl;
    // Until this record is applied, either it or the previous one may end
    // up the latest: acknowledge only what both cover.
    l.covered_until = std::min(l.covered_until, covers);
    auto* item = checkpoint->add_items();
    item->set_id(id);
    item->set_remaining_ms(absl::ToInt64Milliseconds(remaining));
    in_flight_.push_back(InFlight{id, l.renew_generation, covers});
  };
  // Renewals first: keep-alives wait for them. Those beyond the batch limit
  // stay for the next batch.
  while (!renewed_.empty() && !full()) {
    const int64_t id = *renewed_.begin();
    renewed_.erase(renewed_.begin());
    auto it = leases_.find(id);
    if (it != leases_.end()) add(id, it->second);
  }
  if (refresh) {
    for (auto& [id, l] : leases_) {
      if (full()) break;
      const bool active = l.renewed_at >= now - horizon;
      if ((active && l.covered_until - now < horizon / 2) ||
          now - l.checkpointed_at >= options_.checkpoint_refresh) {
        add(id, l);
      }
    }
  }
  if (checkpoint->items_size() == 0) {
    in_flight_.clear();
    return false;
  }
  checkpoint->set_term(primary_term_);
  *seq = next_seq_++;
  in_flight_seq_ = *seq;
  return true;
}

void Lessor::CheckpointDone(uint64_t seq, bool applied) {
  absl::MutexLock lock(&mu_);
  if (seq != in_flight_seq_) return;  // dropped by Demote already
  for (const InFlight& f : in_flight_) {
    auto it = leases_.find(f.id);
    if (it == leases_.end()) continue;
    Lease& l = it->second;
    if (applied) {
      l.checkpointed_generation =
          std::max(l.checkpointed_generation, f.generation);
      // Now the latest record in the log (one batch in flight at a time).
      l.covered_until = f.covered_until;
    } else if (l.renew_generation > l.checkpointed_generation) {
      renewed_.insert(f.id);  // retried in the next batch
    }
  }
  in_flight_seq_ = 0;
  in_flight_.clear();
}

std::vector<int64_t> Lessor::TakeExpired(size_t max) {
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> out;
  if (!primary_) return out;
  const absl::Time now = Now();
  if (now < promoted_at_ + options_.grace) return out;
  for (auto& [id, l] : leases_) {
    if (out.size() >= max) break;
    if (l.expiry <= now && l.revoke_after <= now) {
      l.revoke_after = now + options_.revoke_retry;
      out.push_back(id);
    }
  }
  return out;
}

}  // namespace lockd::kv
