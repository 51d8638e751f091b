#include "raft/core/log.h"

#include <gtest/gtest.h>

namespace lockd::raft {
namespace {

std::vector<Entry> Ents(std::vector<std::pair<uint64_t, uint64_t>> it) {
  std::vector<Entry> out;
  for (auto [term, index] : it)
    out.push_back(Entry{term, index, EntryType::kNormal, ""});
  return out;
}

TEST(RaftLog_FindConflict, ReturnsFirstMismatch) {  // §5.3
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  std::vector<Entry> base = Ents({{1, 1}, {2, 2}, {3, 3}});
  log.Append(base.data(), base.size());
  EXPECT_EQ(log.FindConflict(Ents({{1, 1}, {2, 2}})), 0u);
  EXPECT_EQ(log.FindConflict(Ents({{2, 2}, {3, 3}, {4, 4}})), 4u);
  EXPECT_EQ(log.FindConflict(Ents({{1, 1}, {4, 2}})), 2u);
}

TEST(RaftLog_MaybeAppend, RejectsMismatchAndTruncatesConflicts) {  // §5.3
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  std::vector<Entry> base = Ents({{1, 1}, {2, 2}, {3, 3}});
  log.Append(base.data(), base.size());
  bool bad = false;
  EXPECT_FALSE(log.MaybeAppend(3, 2, 3, {}, &bad).has_value());
  EXPECT_EQ(*log.MaybeAppend(1, 1, 2, Ents({{4, 2}}), &bad), 2u);
  EXPECT_EQ(log.LastIndex(), 2u);
  EXPECT_EQ(log.committed(), 2u);
  // An append overwriting a committed entry is refused, not applied.
  EXPECT_FALSE(log.MaybeAppend(1, 1, 2, Ents({{5, 2}}), &bad).has_value());
  EXPECT_TRUE(bad);
  EXPECT_EQ(log.ZeroTermOnError(2), 4u);
}

TEST(RaftLog_IsUpToDate, ComparesLastTermThenIndex) {  // §5.4.1
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  std::vector<Entry> base = Ents({{1, 1}, {2, 2}, {3, 3}});
  log.Append(base.data(), base.size());
  EXPECT_TRUE(log.IsUpToDate(1, 4));
  EXPECT_FALSE(log.IsUpToDate(10, 2));
  EXPECT_TRUE(log.IsUpToDate(3, 3));
  EXPECT_FALSE(log.IsUpToDate(2, 3));
}

TEST(RaftLog_StableTo, MovesUnstableOffsetOnlyOnTermMatch) {
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  std::vector<Entry> base = Ents({{1, 1}, {1, 2}});
  log.Append(base.data(), base.size());
  log.StableTo(2, 2);  // wrong term: ignored
  EXPECT_EQ(log.UnstableEntries().size(), 2u);
  ASSERT_TRUE(s.Append(base).ok());
  log.StableTo(2, 1);
  EXPECT_TRUE(log.UnstableEntries().empty());
  EXPECT_EQ(log.LastIndex(), 2u);
}

TEST(RaftLog_NextCommittedEntries, RespectsAppliedAndSizeLimit) {
  MemoryStorage s;
  RaftLog log(&s, 1);  // one entry per batch
  std::vector<Entry> base = Ents({{1, 1}, {1, 2}, {1, 3}});
  for (Entry& e : base) e.data = "x";
  log.Append(base.data(), base.size());
  log.CommitTo(3);
  EXPECT_EQ(log.NextCommittedEntries().size(), 1u);
  log.AppliedTo(2);
  EXPECT_EQ(log.NextCommittedEntries()[0].index, 3u);
  log.AppliedTo(3);
  EXPECT_FALSE(log.HasNextCommittedEntries());
}

TEST(RaftLog_FindConflictByTerm, SkipsWholeTerms) {  // §5.3 optimization
  MemoryStorage s;
  RaftLog log(&s, kNoLimit);
  std::vector<Entry> base = Ents({{1, 1}, {1, 2}, {3, 3}, {3, 4}, {5, 5}});
  log.Append(base.data(), base.size());
  EXPECT_EQ(log.FindConflictByTerm(5, 4).first, 4u);
  EXPECT_EQ(log.FindConflictByTerm(5, 2).first, 2u);
  EXPECT_EQ(log.FindConflictByTerm(9, 2).first, 9u);
}

}  // namespace
}  // namespace lockd::raft
