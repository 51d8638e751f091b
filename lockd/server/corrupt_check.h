// etcd's data corruption checks: members compare HashKV (a checksum of the
// key-value history up to a revision) so that a member whose data diverged
// (a disk or software fault) is noticed rather than served.
//
// InitialCheck (--experimental-initial-corrupt-check): before a member
// serves anyone, it asks every reachable peer for HashKV at its own
// revision; a peer with the same compact revision and another hash means
// this member must not start. Peers behind this member (future revision) or
// that compacted further cannot be compared and are skipped, as are peers
// that do not answer.
//
// CheckOnce (every --experimental-corrupt-check-time, on the leader): the
// leader's HashKV at its revision against every follower's at the same
// revision, then a linearizable read barrier and its own hash again. A
// follower whose hash differs at the same compact revision, or whose
// revision or compact revision is ahead of the leader's, or a leader whose
// own hash changed under an unchanged revision, raises the CORRUPT alarm
// (through the log, naming that member): from then on the cluster refuses
// writes with "etcdserver: corrupt cluster" until an operator investigates
// and disarms it.
#ifndef LOCKD_SERVER_CORRUPT_CHECK_H_
#define LOCKD_SERVER_CORRUPT_CHECK_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etcdserverpb/rpc.pb.h"
#include "kv/mvcc/store.h"
#include "lockd/util/timed_loop.h"

namespace lockd {

class CorruptionChecker {
 public:
  struct Hooks {
    // This member's HashKV at its current revision.
    std::function<absl::StatusOr<kv::MvccStore::HashResult>()> local_hash;
    // The other members' IDs.
    std::function<std::vector<uint64_t>()> peers;
    // A peer's HashKV at `revision` (its header names its own revision).
    std::function<absl::StatusOr<etcdserverpb::HashKVResponse>(
        uint64_t member, int64_t revision)>
        peer_hash;
    // Returns once this member has applied everything committed before the
    // call (a linearizable read's barrier).
    std::function<absl::Status()> read_barrier;
    // Raises the CORRUPT alarm for `member` through the log.
    std::function<absl::Status(uint64_t member)> raise_alarm;
    std::function<bool()> is_leader;
  };

  CorruptionChecker(uint64_t self, Hooks hooks);
  ~CorruptionChecker();
  CorruptionChecker(const CorruptionChecker&) = delete;
  CorruptionChecker& operator=(const CorruptionChecker&) = delete;

  // Errors: kDataLoss "<id> found data inconsistency with peers"; kInternal
  // when the local hash cannot be computed.
  absl::Status InitialCheck();

  // One check as the leader (nothing when not leading). Returns the member
  // an alarm was raised for (0: none). Errors: the local hash or the read
  // barrier failed (nothing was compared).
  absl::StatusOr<uint64_t> CheckOnce();

  // Runs CheckOnce every `interval` on a thread until Stop().
  void Start(absl::Duration interval);
  void Stop();

 private:
  const uint64_t self_;
  const Hooks hooks_;
  TimedLoop loop_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_CORRUPT_CHECK_H_
