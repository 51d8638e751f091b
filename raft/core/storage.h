// The Storage interface through which the Raft core reads stable (persisted)
// log entries and snapshots, and MemoryStorage, an in-memory implementation
// used by tests, the simulator and benchmarks.
//
// Index ranges. A Storage holding a snapshot at index S (S = 0 if none) and
// entries up to L has:
//   FirstIndex() == S + 1, LastIndex() == L  (L >= S; L == S when empty)
//   Term(i) valid for i in [S, L]  (Term(S) is the snapshot's term)
//   Entries(lo, hi, ...) valid for S < lo <= hi <= L + 1
// Errors:
//   IsErrCompacted(status)   the index is at or below a compaction point
//                         (Term(i) for i < S, Entries with lo <= S)
//   IsErrUnavailable(status) the index is beyond LastIndex()
//   IsSnapshotTemporarilyUnavailable(status)  GetSnapshot() cannot produce
//                         a snapshot now; the leader retries later.
//
// Thread safety: the core calls Storage only from its owning thread. An
// implementation shared with another thread must synchronize internally.
#ifndef LOCKD_RAFT_CORE_STORAGE_H_
#define LOCKD_RAFT_CORE_STORAGE_H_

#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/types.h"

namespace lockd::raft {

inline constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

absl::Status ErrCompacted();
absl::Status ErrUnavailable();
absl::Status ErrSnapOutOfDate();
absl::Status ErrSnapshotTemporarilyUnavailable();
bool IsErrCompacted(const absl::Status& s);
bool IsErrUnavailable(const absl::Status& s);
bool IsSnapOutOfDate(const absl::Status& s);
bool IsSnapshotTemporarilyUnavailable(const absl::Status& s);

class Storage {
 public:
  virtual ~Storage() = default;

  // The persisted HardState and the ConfState of the latest snapshot
  // (or the initial configuration).
  virtual absl::Status InitialState(HardState* hard_state,
                                    ConfState* conf_state) const = 0;
  // Entries [lo, hi), at most max_bytes of payload but always at least one
  // entry if lo < hi.
  virtual absl::StatusOr<std::vector<Entry>> Entries(
      uint64_t lo, uint64_t hi, uint64_t max_bytes) const = 0;
  virtual absl::StatusOr<uint64_t> Term(uint64_t index) const = 0;
  virtual uint64_t FirstIndex() const = 0;
  virtual uint64_t LastIndex() const = 0;
  // The most recent snapshot.
  virtual absl::StatusOr<Snapshot> GetSnapshot() const = 0;
};

// Not thread-safe: owned by one thread (the sim and tests are single
// threaded). Entries are kept in a vector whose element 0 is a dummy entry
// holding the snapshot's index and term.
class MemoryStorage : public Storage {
 public:
  MemoryStorage();

  absl::Status InitialState(HardState* hard_state,
                            ConfState* conf_state) const override;
  absl::StatusOr<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi,
                                             uint64_t max_bytes) const override;
  absl::StatusOr<uint64_t> Term(uint64_t index) const override;
  uint64_t FirstIndex() const override;
  uint64_t LastIndex() const override;
  absl::StatusOr<Snapshot> GetSnapshot() const override;

  void SetHardState(const HardState& hs) { hard_state_ = hs; }
  const HardState& hard_state() const { return hard_state_; }
  // Sets the configuration reported by InitialState when there is no
  // snapshot (bootstrapping a new cluster).
  void SetConfState(const ConfState& cs) { snapshot_.metadata.conf_state = cs; }

  // Replaces the whole contents with the snapshot. ErrSnapOutOfDate if the
  // snapshot is older than the current one.
  absl::Status ApplySnapshot(Snapshot snap);
  // Creates a snapshot at `index` (<= LastIndex()) with the given image and
  // config. ErrSnapOutOfDate if index <= current snapshot index.
  absl::StatusOr<Snapshot> CreateSnapshot(uint64_t index, const ConfState* cs,
                                          std::string data);
  // Discards entries up to and including `compact_index` (which must be
  // <= LastIndex()). ErrCompacted if already compacted past it.
  absl::Status Compact(uint64_t compact_index);
  // Appends entries, truncating any existing entries at or after the first
  // new index. The new entries must be contiguous and must not leave a gap.
  absl::Status Append(const std::vector<Entry>& entries);
  // Same, moving the entries in.
  absl::Status Append(std::vector<Entry>&& entries);

 private:
  uint64_t first_index() const { return ents_[0].index + 1; }
  uint64_t last_index() const { return ents_[0].index + ents_.size() - 1; }

  HardState hard_state_;
  Snapshot snapshot_;
  std::vector<Entry> ents_;  // ents_[i].index == ents_[0].index + i
};

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_CORE_STORAGE_H_
