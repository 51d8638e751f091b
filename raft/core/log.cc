#include "raft/core/log.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "raft/core/check.h"

namespace lockd::raft {

namespace {

// Keeps at least one entry, then as many as fit in max_bytes.
void LimitSize(std::vector<Entry>* ents, uint64_t max_bytes) {
  if (ents->empty() || max_bytes == kNoLimit) return;
  uint64_t size = (*ents)[0].PayloadSize();
  size_t limit = 1;
  for (; limit < ents->size(); ++limit) {
    size += (*ents)[limit].PayloadSize();
    if (size > max_bytes) break;
  }
  ents->resize(limit);
}

}  // namespace

// ----------------------------------------------------------------------------
// Unstable

std::optional<uint64_t> Unstable::MaybeFirstIndex() const {
  if (snapshot_.has_value()) return snapshot_->metadata.index + 1;
  return std::nullopt;
}

std::optional<uint64_t> Unstable::MaybeLastIndex() const {
  if (!entries_.empty()) return offset_ + entries_.size() - 1;
  if (snapshot_.has_value()) return snapshot_->metadata.index;
  return std::nullopt;
}

std::optional<uint64_t> Unstable::MaybeTerm(uint64_t i) const {
  if (i < offset_) {
    if (snapshot_.has_value() && snapshot_->metadata.index == i) {
      return snapshot_->metadata.term;
    }
    return std::nullopt;
  }
  std::optional<uint64_t> last = MaybeLastIndex();
  if (!last.has_value() || i > *last) return std::nullopt;
  return entries_[i - offset_].term;
}

void Unstable::StableTo(uint64_t i, uint64_t t) {
  std::optional<uint64_t> gt = MaybeTerm(i);
  if (!gt.has_value()) return;
  // Only stabilize if the entry was not overwritten by a later append.
  if (*gt == t && i >= offset_) {
    entries_.erase(entries_.begin(), entries_.begin() + (i + 1 - offset_));
    offset_ = i + 1;
  }
}

void Unstable::StableSnapTo(uint64_t i) {
  if (snapshot_.has_value() && snapshot_->metadata.index == i) {
    snapshot_.reset();
  }
}

void Unstable::Restore(Snapshot s) {
  offset_ = s.metadata.index + 1;
  entries_.clear();
  snapshot_ = std::move(s);
}

void Unstable::TruncateAndAppend(const Entry* ents, size_t n) {
  if (n == 0) return;
  const uint64_t after = ents[0].index;
  if (after == offset_ + entries_.size()) {
    entries_.insert(entries_.end(), ents, ents + n);
  } else if (after <= offset_) {
    // Replace the unstable entries entirely.
    offset_ = after;
    entries_.assign(ents, ents + n);
  } else {
    // Truncate to `after` and append.
    entries_.resize(after - offset_);
    entries_.insert(entries_.end(), ents, ents + n);
  }
}

void Unstable::TruncateAndAppend(std::vector<Entry>* ents, size_t from) {
  if (from >= ents->size()) return;
  const uint64_t after = (*ents)[from].index;
  auto first = std::make_move_iterator(ents->begin() + from);
  auto last = std::make_move_iterator(ents->end());
  if (after == offset_ + entries_.size()) {
    if (entries_.empty() && from == 0) {
      entries_ = std::move(*ents);
      return;
    }
  } else if (after <= offset_) {
    offset_ = after;
    entries_.clear();
  } else {
    entries_.resize(after - offset_);
  }
  entries_.insert(entries_.end(), first, last);
}

void Unstable::Slice(uint64_t lo, uint64_t hi, std::vector<Entry>* out) const {
  const uint64_t upper = offset_ + entries_.size();
  RAFT_CHECK(lo <= hi && lo >= offset_ && hi <= upper,
             "unstable.slice[%d,%d) out of bound [%d,%d]", lo, hi, offset_,
             upper);
  out->insert(out->end(), entries_.begin() + (lo - offset_),
              entries_.begin() + (hi - offset_));
}

// ----------------------------------------------------------------------------
// RaftLog

RaftLog::RaftLog(const Storage* storage, uint64_t max_next_ents_bytes)
    : storage_(storage), max_next_ents_bytes_(max_next_ents_bytes) {
  RAFT_CHECK(storage != nullptr, "storage must not be nil");
  const uint64_t first = storage->FirstIndex();
  const uint64_t last = storage->LastIndex();
  unstable_.set_offset(last + 1);
  committed_ = first - 1;
  applied_ = first - 1;
}

std::optional<uint64_t> RaftLog::MaybeAppend(uint64_t index, uint64_t log_term,
                                             uint64_t committed,
                                             std::vector<Entry> ents,
                                             bool* conflict_with_committed) {
  *conflict_with_committed = false;
  if (!MatchTerm(index, log_term)) return std::nullopt;
  const uint64_t last_new = index + ents.size();
  const uint64_t ci = FindConflict(ents);
  if (ci != 0) {
    if (ci <= committed_) {
      *conflict_with_committed = true;
      return std::nullopt;
    }
    const uint64_t offset = index + 1;
    RAFT_CHECK(ci - offset < ents.size(), "conflict index out of range");
    const uint64_t after = ci - 1;
    RAFT_CHECK(after >= committed_, "after(%d) is out of range [committed(%d)]",
               after, committed_);
    unstable_.TruncateAndAppend(&ents, ci - offset);
  }
  CommitTo(std::min(committed, last_new));
  return last_new;
}

uint64_t RaftLog::Append(const Entry* ents, size_t n) {
  if (n == 0) return LastIndex();
  const uint64_t after = ents[0].index - 1;
  RAFT_CHECK(after >= committed_, "after(%d) is out of range [committed(%d)]",
             after, committed_);
  unstable_.TruncateAndAppend(ents, n);
  return LastIndex();
}

uint64_t RaftLog::Append(std::vector<Entry> ents) {
  if (ents.empty()) return LastIndex();
  const uint64_t after = ents[0].index - 1;
  RAFT_CHECK(after >= committed_, "after(%d) is out of range [committed(%d)]",
             after, committed_);
  unstable_.TruncateAndAppend(&ents, 0);
  return LastIndex();
}

uint64_t RaftLog::FindConflict(const std::vector<Entry>& ents) const {
  for (const Entry& e : ents) {
    if (!MatchTerm(e.index, e.term)) return e.index;
  }
  return 0;
}

std::pair<uint64_t, uint64_t> RaftLog::FindConflictByTerm(uint64_t index,
                                                          uint64_t term) const {
  if (index > LastIndex()) return {index, 0};
  while (true) {
    absl::StatusOr<uint64_t> t = Term(index);
    if (!t.ok()) return {index, 0};
    if (*t <= term) return {index, *t};
    --index;
  }
}

std::vector<Entry> RaftLog::NextCommittedEntries() const {
  const uint64_t off = std::max(applied_ + 1, FirstIndex());
  if (committed_ + 1 > off) {
    absl::StatusOr<std::vector<Entry>> ents =
        Slice(off, committed_ + 1, max_next_ents_bytes_);
    RAFT_CHECK(ents.ok(), "unexpected error when getting unapplied entries: %s",
               ents.status().ToString());
    return *std::move(ents);
  }
  return {};
}

bool RaftLog::HasNextCommittedEntries() const {
  const uint64_t off = std::max(applied_ + 1, FirstIndex());
  return committed_ + 1 > off;
}

absl::StatusOr<Snapshot> RaftLog::GetSnapshot() const {
  if (unstable_.snapshot().has_value()) return *unstable_.snapshot();
  return storage_->GetSnapshot();
}

uint64_t RaftLog::FirstIndex() const {
  std::optional<uint64_t> i = unstable_.MaybeFirstIndex();
  if (i.has_value()) return *i;
  return storage_->FirstIndex();
}

uint64_t RaftLog::LastIndex() const {
  std::optional<uint64_t> i = unstable_.MaybeLastIndex();
  if (i.has_value()) return *i;
  return storage_->LastIndex();
}

uint64_t RaftLog::LastTerm() const {
  absl::StatusOr<uint64_t> t = Term(LastIndex());
  RAFT_CHECK(t.ok(), "unexpected error when getting the last term: %s",
             t.status().ToString());
  return *t;
}

absl::StatusOr<uint64_t> RaftLog::Term(uint64_t i) const {
  // The valid term range is [first index - 1, last index].
  const uint64_t dummy = FirstIndex() - 1;
  if (i < dummy) return ErrCompacted();
  if (i > LastIndex()) return ErrUnavailable();
  std::optional<uint64_t> t = unstable_.MaybeTerm(i);
  if (t.has_value()) return *t;
  absl::StatusOr<uint64_t> st = storage_->Term(i);
  if (st.ok() || IsErrCompacted(st.status()) || IsErrUnavailable(st.status())) {
    return st;
  }
  RAFT_FATAL("unexpected storage error: %s", st.status().ToString());
}

bool RaftLog::TermNoStatus(uint64_t i, uint64_t* term) const {
  if (i + 1 < FirstIndex() || i > LastIndex()) return false;
  std::optional<uint64_t> t = unstable_.MaybeTerm(i);
  if (t.has_value()) {
    *term = *t;
    return true;
  }
  absl::StatusOr<uint64_t> st = Term(i);
  if (!st.ok()) return false;
  *term = *st;
  return true;
}

uint64_t RaftLog::ZeroTermOnError(uint64_t i) const {
  uint64_t t = 0;
  return TermNoStatus(i, &t) ? t : 0;
}

bool RaftLog::MatchTerm(uint64_t i, uint64_t term) const {
  uint64_t t = 0;
  return TermNoStatus(i, &t) && t == term;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t term) const {
  const uint64_t last_term = LastTerm();
  return term > last_term || (term == last_term && last_index >= LastIndex());
}

void RaftLog::CommitTo(uint64_t to) {
  if (committed_ < to) {
    RAFT_CHECK(LastIndex() >= to,
               "tocommit(%d) is out of range [lastIndex(%d)]. Was the raft "
               "log corrupted, truncated, or lost?",
               to, LastIndex());
    committed_ = to;
  }
}

bool RaftLog::MaybeCommit(uint64_t max_index, uint64_t term) {
  if (max_index > committed_ && ZeroTermOnError(max_index) == term) {
    CommitTo(max_index);
    return true;
  }
  return false;
}

void RaftLog::AppliedTo(uint64_t i) {
  if (i == 0) return;
  RAFT_CHECK(committed_ >= i && i >= applied_,
             "applied(%d) is out of range [prevApplied(%d), committed(%d)]", i,
             applied_, committed_);
  applied_ = i;
}

void RaftLog::Restore(Snapshot s) {
  committed_ = s.metadata.index;
  unstable_.Restore(std::move(s));
}

absl::Status RaftLog::CheckOutOfBounds(uint64_t lo, uint64_t hi) const {
  RAFT_CHECK(lo <= hi, "invalid slice %d > %d", lo, hi);
  const uint64_t fi = FirstIndex();
  if (lo < fi) return ErrCompacted();
  const uint64_t li = LastIndex();
  RAFT_CHECK(hi <= li + 1, "slice[%d,%d) out of bound [%d,%d]", lo, hi, fi, li);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Entry>> RaftLog::Slice(uint64_t lo, uint64_t hi,
                                                  uint64_t max_bytes) const {
  absl::Status s = CheckOutOfBounds(lo, hi);
  if (!s.ok()) return s;
  std::vector<Entry> ents;
  if (lo == hi) return ents;
  const uint64_t uoff = unstable_.offset();
  if (lo < uoff) {
    const uint64_t shi = std::min(hi, uoff);
    absl::StatusOr<std::vector<Entry>> stored =
        storage_->Entries(lo, shi, max_bytes);
    if (!stored.ok()) {
      if (IsErrCompacted(stored.status())) return stored.status();
      RAFT_FATAL("entries[%d:%d) is unavailable from storage: %s", lo, shi,
                 stored.status().ToString());
    }
    // Storage already applied the size limit.
    if (stored->size() < shi - lo) return stored;
    ents = *std::move(stored);
  }
  if (hi > uoff) unstable_.Slice(std::max(lo, uoff), hi, &ents);
  LimitSize(&ents, max_bytes);
  return ents;
}

absl::StatusOr<std::vector<Entry>> RaftLog::EntriesFrom(
    uint64_t i, uint64_t max_bytes) const {
  if (i > LastIndex()) return std::vector<Entry>{};
  return Slice(i, LastIndex() + 1, max_bytes);
}

std::string RaftLog::DebugString() const {
  return absl::StrFormat(
      "committed=%d, applied=%d, unstable.offset=%d, len(unstable)=%d",
      committed_, applied_, unstable_.offset(), unstable_.entries().size());
}

}  // namespace lockd::raft
