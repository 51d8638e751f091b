// RaftLog: the node's view of the log, stitched from the stable part (in
// Storage) and the unstable part (appended but not yet persisted, or a
// snapshot not yet installed).
//
//   storage:  [snapshot S] (S, stable_last]
//   unstable:           (optional snapshot) [offset, ...)  where offset is
//                       the index of the first unstable entry.
// Invariants: applied <= committed <= LastIndex(); FirstIndex()-1 <= applied.
#ifndef LOCKD_RAFT_CORE_LOG_H_
#define LOCKD_RAFT_CORE_LOG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/core/storage.h"
#include "raft/core/types.h"

namespace lockd::raft {

// Entries and a snapshot not yet written to Storage.
class Unstable {
 public:
  // First index of a pending snapshot + 1, if there is one.
  std::optional<uint64_t> MaybeFirstIndex() const;
  std::optional<uint64_t> MaybeLastIndex() const;
  std::optional<uint64_t> MaybeTerm(uint64_t i) const;

  // Entries up to (i, t) have been persisted.
  void StableTo(uint64_t i, uint64_t t);
  void StableSnapTo(uint64_t i);
  void Restore(Snapshot s);
  void TruncateAndAppend(const Entry* ents, size_t n);
  // Same, taking the entries [from, end) of `ents` by move.
  void TruncateAndAppend(std::vector<Entry>* ents, size_t from);
  // Entries [lo, hi), appended to *out.
  void Slice(uint64_t lo, uint64_t hi, std::vector<Entry>* out) const;

  const std::optional<Snapshot>& snapshot() const { return snapshot_; }
  const std::vector<Entry>& entries() const { return entries_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t o) { offset_ = o; }

 private:
  std::optional<Snapshot> snapshot_;
  std::vector<Entry> entries_;
  uint64_t offset_ = 0;
};

class RaftLog {
 public:
  // `storage` must outlive the log. Entries in storage are considered
  // committed and applied only up to its first index - 1 initially.
  RaftLog(const Storage* storage, uint64_t max_next_ents_bytes);

  // Follower append (Raft §5.3): if the entry at `index` has `log_term`,
  // appends `ents` after it, truncating conflicts, advances commit to
  // min(committed, last new index) and returns the last new index.
  // An append that would overwrite a committed entry is a protocol
  // violation: nothing changes and *conflict_with_committed is set.
  std::optional<uint64_t> MaybeAppend(uint64_t index, uint64_t log_term,
                                      uint64_t committed,
                                      std::vector<Entry> ents,
                                      bool* conflict_with_committed);
  // Leader append; returns the new last index.
  uint64_t Append(const Entry* ents, size_t n);
  uint64_t Append(std::vector<Entry> ents);
  uint64_t FindConflict(const std::vector<Entry>& ents) const;
  // Largest (index, term) with index <= `index` and term <= `term`; used for
  // fast backtracking of a rejected append (thesis §5.3 optimization).
  std::pair<uint64_t, uint64_t> FindConflictByTerm(uint64_t index,
                                                   uint64_t term) const;

  // All unstable entries (to persist).
  const std::vector<Entry>& UnstableEntries() const {
    return unstable_.entries();
  }
  // Committed entries not yet applied, bounded by max_next_ents_bytes.
  std::vector<Entry> NextCommittedEntries() const;
  bool HasNextCommittedEntries() const;
  bool HasPendingSnapshot() const { return unstable_.snapshot().has_value(); }
  const std::optional<Snapshot>& PendingSnapshot() const {
    return unstable_.snapshot();
  }
  absl::StatusOr<Snapshot> GetSnapshot() const;

  uint64_t FirstIndex() const;
  uint64_t LastIndex() const;
  uint64_t LastTerm() const;
  absl::StatusOr<uint64_t> Term(uint64_t i) const;
  // Term(i), or 0 if compacted/unavailable.
  uint64_t ZeroTermOnError(uint64_t i) const;
  bool MatchTerm(uint64_t i, uint64_t term) const;
  // Raft §5.4.1: is (last_index, term) at least as up to date as ours?
  bool IsUpToDate(uint64_t last_index, uint64_t term) const;

  void CommitTo(uint64_t to);
  // Commits max_index if its term is `term` (Raft §5.4.2: only current-term
  // entries are committed by counting replicas).
  bool MaybeCommit(uint64_t max_index, uint64_t term);
  void AppliedTo(uint64_t i);
  void StableTo(uint64_t i, uint64_t t) { unstable_.StableTo(i, t); }
  void StableSnapTo(uint64_t i) { unstable_.StableSnapTo(i); }
  void Restore(Snapshot s);

  // Entries [lo, hi) with at most max_bytes payload (always >= 1 entry).
  absl::StatusOr<std::vector<Entry>> Slice(uint64_t lo, uint64_t hi,
                                           uint64_t max_bytes) const;
  // Entries from i to the end.
  absl::StatusOr<std::vector<Entry>> EntriesFrom(uint64_t i,
                                                 uint64_t max_bytes) const;

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }
  const Storage* storage() const { return storage_; }
  const Unstable& unstable() const { return unstable_; }

  std::string DebugString() const;

 private:
  absl::Status CheckOutOfBounds(uint64_t lo, uint64_t hi) const;
  // Term lookup without building a Status (hot path).
  bool TermNoStatus(uint64_t i, uint64_t* term) const;

  const Storage* storage_;
  Unstable unstable_;
  uint64_t committed_ = 0;
  uint64_t applied_ = 0;
  uint64_t max_next_ents_bytes_;
};

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_CORE_LOG_H_
