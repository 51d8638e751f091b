// The lessor: etcd v3 leases on the replicated store.
//
// Replicated state (the same on every member, changed only by applied log
// entries, stored in the MvccStore in the same atomic write as the rest of a
// batch, so raft snapshots carry it): per lease its id, granted TTL and the
// last checkpointed remaining time (internal.proto LeaseRecord). Keys attach
// to leases in the store itself (MvccStore's `lease` column family).
//
// Volatile state, meaningful only on the leader ("primary"): each lease's
// expiry on a monotonic clock. Keep-alives renew it in memory; no member
// deletes keys on its own clock: the leader *proposes* LeaseRevoke entries
// for expired leases (TakeExpired; the caller limits the rate).
//
// The expiry rule across leader changes (never early, never reset to full):
//  * The leader proposes LeaseCheckpoint batches recording, per lease, a
//    remaining time r measured at the proposal time t_c. The lease's record
//    then promises expiry no earlier than t_c + r.
//  * A keep-alive at time t promises the client expiry t + ttl. The leader
//    acknowledges it only if the lease's last record covers it, i.e.
//    t <= covered_until = t_c + r - ttl of every record that may be the
//    latest in the log (the one applied and the one in flight). If not, the
//    renewal goes into the next batch and is answered once that batch is
//    applied (Renew/WaitCheckpoint). So every promise is in the log.
//  * To answer steady keep-alives without a raft round trip, a lease
//    renewed within `ack_horizon` is recorded with r = max(expiry - t_c,
//    ttl + ack_horizon), covering keep-alives until t_c + ack_horizon; the
//    driver extends it again before it runs out. An idle lease is recorded
//    exactly (r = expiry - t_c), every `checkpoint_refresh`.
//  * A new leader sets expiry = t_promote + r + grace (grace = one election
//    timeout; a lease never checkpointed counts its full TTL). Since
//    t_promote > t_c, that is later than every acknowledged promise: no
//    lease expires early. It exceeds the old leader's expiry by at most
//    ack_horizon (active leases) or checkpoint_refresh (idle ones) plus
//    commit latency plus grace: the TTL is not reset to full.
//  * A checkpoint from an earlier leadership, applied after promotion,
//    extends expiry to max(expiry, t_apply + r) by the same argument; the
//    primary's own checkpoints change nothing in memory.
//  * Nothing expires during the first `grace` after promotion.
//
// Thread safety: all methods are thread-safe (one internal mutex, never held
// across I/O or a callback). The Apply* methods and ReloadFromStore must be
// called from the apply thread only, in log order.
#ifndef LOCKD_KV_LEASE_LESSOR_H_
#define LOCKD_KV_LEASE_LESSOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "etcdserverpb/rpc.pb.h"
#include "kv/mvcc/store.h"
#include "lockd/util/metrics.h"
#include "lockdpb/internal.pb.h"

namespace lockd::kv {

// etcd's lease errors (wording and gRPC codes of etcd's rpctypes).
inline absl::Status ErrLeaseExists() {
  return absl::FailedPreconditionError("etcdserver: lease already exists");
}
inline absl::Status ErrLeaseTTLTooLarge() {
  return absl::OutOfRangeError("etcdserver: too large lease TTL");
}

struct LessorOptions {
  // Smallest TTL granted, seconds; etcd: ceil(1.5 * election timeout).
  int64_t min_ttl_s = 2;
  // A new leader expires nothing for this long (one election timeout).
  absl::Duration grace = absl::Seconds(1);
  // A lease not renewed is checkpointed again after this long, bounding how
  // much a leader change can lengthen it.
  absl::Duration checkpoint_refresh = absl::Seconds(1);
  // Keep-alives of an active lease are answered at once for this long
  // after its last checkpoint (see above).
  absl::Duration ack_horizon = absl::Seconds(1);
  // Items per checkpoint entry.
  size_t checkpoint_batch_max = 5000;
  // An expired lease whose revoke did not apply is proposed again after
  // this long.
  absl::Duration revoke_retry = absl::Seconds(3);
  // A monotonic clock (default: lockd::MonotonicNow, never the wall clock,
  // whose steps would expire leases early or keep them late); tests inject
  // their own.
  std::function<absl::Time()> now;
  // etcd's lease counters (etcd_debugging_lease_granted_total,
  // _revoked_total, _renewed_total) and the granted TTLs
  // (etcd_debugging_lease_ttl_total); any may be null.
  metrics::Counter* granted = nullptr;
  metrics::Counter* revoked = nullptr;
  metrics::Counter* renewed = nullptr;
  metrics::Histogram* ttl_seconds = nullptr;
};

class Lessor final : public LeaseOracle {
 public:
  // etcd's MaxLeaseTTL, seconds.
  static constexpr int64_t kMaxTtlS = 9000000000;

  // `store` must outlive the lessor. Call ReloadFromStore before use.
  Lessor(MvccStore* store, LessorOptions options);

  // Rebuilds the replicated table from the store's lease records (after
  // opening the store, and after a raft snapshot replaced its contents).
  // `replacement`, if not null, is a new store object to use from now on
  // (it must outlive the lessor). On the primary every lease gets expiry =
  // now + remaining + grace. Apply thread only.
  absl::Status ReloadFromStore(MvccStore* replacement = nullptr);

  // --- Replicated changes, apply thread only, in log order. ---
  // etcd's Grant: id 0 -> ErrLeaseNotFound, TTL > kMaxTtlS ->
  // ErrLeaseTTLTooLarge, an existing id -> ErrLeaseExists. The TTL is used
  // as proposed (the proposer raises it to the minimum, see GrantTtl), so
  // every member grants the same.
  absl::Status ApplyGrant(ApplyBatch* batch,
                          const etcdserverpb::LeaseGrantRequest& req,
                          etcdserverpb::LeaseGrantResponse* resp);
  // Deletes the lease and every key attached to it in one revision.
  absl::Status ApplyRevoke(ApplyBatch* batch,
                           const etcdserverpb::LeaseRevokeRequest& req,
                           etcdserverpb::LeaseRevokeResponse* resp);
  // Records remaining times; unknown (revoked) leases are skipped.
  void ApplyCheckpoint(ApplyBatch* batch,
                       const internal::LeaseCheckpoint& checkpoint);

  // LeaseOracle: whether the replicated table holds the lease.
  bool LeaseExists(int64_t lease_id) const override;

  // The TTL to propose for a requested one (raised to the minimum as etcd
  // does), or ErrLeaseTTLTooLarge.
  absl::StatusOr<int64_t> GrantTtl(int64_t requested_ttl_s) const;

  // --- Leadership (volatile). ---
  // Becomes primary for `term` (no-op if already primary for it).
  void Promote(uint64_t term);
  // Stops being primary; waiting keep-alives fail with kUnavailable.
  void Demote();
  bool primary() const;

  // Renews a lease in memory on the primary. Returns the granted TTL and
  // what to pass to WaitCheckpoint before answering the client (generation
  // 0: answer now, the lease's record already covers it). Errors:
  // ErrLeaseNotFound (unknown or already expired: etcd answers TTL 0),
  // kUnavailable (not primary).
  struct Renewal {
    int64_t ttl_s = 0;
    uint64_t generation = 0;  // the lease's renewal count
    uint64_t epoch = 0;       // the leadership it was made under
  };
  absl::StatusOr<Renewal> Renew(int64_t lease_id);
  // Waits until a checkpoint holding this renewal has been applied. Errors:
  // ErrLeaseNotFound (revoked meanwhile), kUnavailable "leader changed"
  // (demoted), kDeadlineExceeded.
  absl::Status WaitCheckpoint(int64_t lease_id, const Renewal& renewal,
                              absl::Time deadline);

  // etcd's TimeToLive. On the primary `remaining_s` comes from the expiry
  // (never above the granted TTL); elsewhere from the last checkpoint.
  struct Info {
    int64_t granted_ttl_s = 0;
    int64_t remaining_s = 0;
  };
  absl::StatusOr<Info> TimeToLive(int64_t lease_id) const;
  // Every lease id, ascending.
  std::vector<int64_t> Leases() const;

  // --- The primary's driver (one thread). ---
  // The next checkpoint to propose, if one is due and none is in flight:
  // renewals waiting for one, plus (when `refresh`) active leases whose
  // cover runs out within half the ack horizon and idle leases not
  // checkpointed for checkpoint_refresh; at most checkpoint_batch_max
  // items. Returns false when there is nothing to propose.
  bool TakeCheckpoint(bool refresh, uint64_t* seq,
                      internal::LeaseCheckpoint* checkpoint);
  // The outcome of checkpoint `seq`: applied, or failed to propose or
  // commit (its renewals go into the next one).
  void CheckpointDone(uint64_t seq, bool applied);
  // Expired leases to propose revokes for now, at most `max`; each is not
  // offered again for revoke_retry.
  std::vector<int64_t> TakeExpired(size_t max);

 private:
  struct Lease {
    int64_t ttl_s = 0;
    int64_t remaining_ms = 0;  // replicated: last checkpoint, 0 = none
    // Primary only:
    absl::Time expiry = absl::InfiniteFuture();
    absl::Time checkpointed_at = absl::InfinitePast();
    absl::Time revoke_after = absl::InfinitePast();
    absl::Time renewed_at = absl::InfinitePast();
    // Keep-alives up to this time are covered by the lease's record(s).
    absl::Time covered_until = absl::InfinitePast();
    uint64_t renew_generation = 0;
    uint64_t checkpointed_generation = 0;
  };
  absl::Time Now() const { return options_.now(); }
  void SetPrimaryExpiry(Lease& l, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static std::string Record(int64_t id, const Lease& l);

  MvccStore* store_;  // apply thread only
  const LessorOptions options_;
  mutable absl::Mutex mu_;
  std::map<int64_t, Lease> leases_ ABSL_GUARDED_BY(mu_);
  bool primary_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t primary_term_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time promoted_at_ ABSL_GUARDED_BY(mu_);
  // Bumped by every Demote: renewals made before fail their waiters.
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 1;
  // The checkpoint in flight (0: none) and what it holds.
  struct InFlight {
    int64_t id;
    uint64_t generation;
    absl::Time covered_until;
  };
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t in_flight_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  // Ids renewed since they were last put into a checkpoint.
  std::set<int64_t> renewed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lockd::kv

#endif  // LOCKD_KV_LEASE_LESSOR_H_
