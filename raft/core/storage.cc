#include "raft/core/storage.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "raft/core/check.h"

namespace lockd::raft {

namespace internal {
void CheckFailed(const char* file, int line, const char* cond,
                 const std::string& msg) {
  std::fprintf(stderr, "%s:%d: RAFT_CHECK failed: %s: %s\n", file, line, cond,
               msg.c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace internal

namespace {
constexpr char kCompactedMsg[] =
    "requested index is unavailable due to compaction";
constexpr char kUnavailableMsg[] = "requested entry at index is unavailable";
constexpr char kSnapOutOfDateMsg[] =
    "requested index is older than the existing snapshot";
constexpr char kSnapTempMsg[] = "snapshot is temporarily unavailable";
}  // namespace

absl::Status ErrCompacted() { return absl::OutOfRangeError(kCompactedMsg); }
absl::Status ErrUnavailable() {
  return absl::UnavailableError(kUnavailableMsg);
}
absl::Status ErrSnapOutOfDate() {
  return absl::FailedPreconditionError(kSnapOutOfDateMsg);
}
absl::Status ErrSnapshotTemporarilyUnavailable() {
  return absl::UnavailableError(kSnapTempMsg);
}
bool IsErrCompacted(const absl::Status& s) {
  return absl::IsOutOfRange(s) && s.message() == kCompactedMsg;
}
bool IsErrUnavailable(const absl::Status& s) {
  return absl::IsUnavailable(s) && s.message() == kUnavailableMsg;
}
bool IsSnapOutOfDate(const absl::Status& s) {
  return absl::IsFailedPrecondition(s) && s.message() == kSnapOutOfDateMsg;
}
bool IsSnapshotTemporarilyUnavailable(const absl::Status& s) {
  return absl::IsUnavailable(s) && s.message() == kSnapTempMsg;
}

MemoryStorage::MemoryStorage() { ents_.resize(1); }

absl::Status MemoryStorage::InitialState(HardState* hard_state,
                                         ConfState* conf_state) const {
  *hard_state = hard_state_;
  *conf_state = snapshot_.metadata.conf_state;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Entry>> MemoryStorage::Entries(
    uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  const uint64_t offset = ents_[0].index;
  if (lo <= offset) return ErrCompacted();
  if (hi > last_index() + 1) return ErrUnavailable();
  RAFT_CHECK(lo <= hi, "Entries: lo %d > hi %d", lo, hi);
  std::vector<Entry> out;
  uint64_t size = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const Entry& e = ents_[i - offset];
    size += e.PayloadSize();
    if (!out.empty() && size > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<uint64_t> MemoryStorage::Term(uint64_t index) const {
  const uint64_t offset = ents_[0].index;
  if (index < offset) return ErrCompacted();
  if (index - offset >= ents_.size()) return ErrUnavailable();
  return ents_[index - offset].term;
}

uint64_t MemoryStorage::FirstIndex() const { return first_index(); }
uint64_t MemoryStorage::LastIndex() const { return last_index(); }

absl::StatusOr<Snapshot> MemoryStorage::GetSnapshot() const {
  return snapshot_;
}

absl::Status MemoryStorage::ApplySnapshot(Snapshot snap) {
  if (snapshot_.metadata.index >= snap.metadata.index &&
      snapshot_.metadata.index != 0) {
    return ErrSnapOutOfDate();
  }
  ents_.clear();
  ents_.push_back(
      Entry{snap.metadata.term, snap.metadata.index, EntryType::kNormal, {}});
  snapshot_ = std::move(snap);
  return absl::OkStatus();
}

absl::StatusOr<Snapshot> MemoryStorage::CreateSnapshot(uint64_t index,
                                                       const ConfState* cs,
                                                       std::string data) {
  if (index <= snapshot_.metadata.index) return ErrSnapOutOfDate();
  RAFT_CHECK(index <= last_index(), "snapshot %d is out of bound lastindex(%d)",
             index, last_index());
  const uint64_t offset = ents_[0].index;
  snapshot_.metadata.index = index;
  snapshot_.metadata.term = ents_[index - offset].term;
  if (cs != nullptr) snapshot_.metadata.conf_state = *cs;
  snapshot_.data = std::move(data);
  return snapshot_;
}

absl::Status MemoryStorage::Compact(uint64_t compact_index) {
  const uint64_t offset = ents_[0].index;
  if (compact_index <= offset) return ErrCompacted();
  RAFT_CHECK(compact_index <= last_index(),
             "compact %d is out of bound lastindex(%d)", compact_index,
             last_index());
  const uint64_t i = compact_index - offset;
  ents_.erase(ents_.begin(), ents_.begin() + i);
  ents_[0].data.clear();
  ents_[0].type = EntryType::kNormal;
  return absl::OkStatus();
}

absl::Status MemoryStorage::Append(const std::vector<Entry>& entries) {
  std::vector<Entry> copy = entries;
  return Append(std::move(copy));
}

absl::Status MemoryStorage::Append(std::vector<Entry>&& entries) {
  if (entries.empty()) return absl::OkStatus();
  const uint64_t first = first_index();
  const uint64_t last = entries.back().index;
  if (last < first) return absl::OkStatus();  // all compacted already
  size_t skip = 0;
  if (first > entries[0].index) skip = first - entries[0].index;
  const uint64_t start = entries[skip].index;
  const uint64_t offset = start - ents_[0].index;
  RAFT_CHECK(offset <= ents_.size(),
             "missing log entry [last: %d, append at: %d]", last_index(),
             start);
  ents_.resize(offset);
  ents_.insert(ents_.end(), std::make_move_iterator(entries.begin() + skip),
               std::make_move_iterator(entries.end()));
  return absl::OkStatus();
}

}  // namespace lockd::raft
