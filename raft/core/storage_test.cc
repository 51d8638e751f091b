#include "raft/core/storage.h"

#include <gtest/gtest.h>

namespace lockd::raft {
namespace {

std::vector<Entry> Ents(uint64_t from, uint64_t to, uint64_t term) {
  std::vector<Entry> out;
  for (uint64_t i = from; i <= to; ++i)
    out.push_back(Entry{term, i, EntryType::kNormal, "d"});
  return out;
}

TEST(MemoryStorage_Term, RangesAndErrors) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append(Ents(1, 5, 1)).ok());
  ASSERT_TRUE(s.Compact(2).ok());
  EXPECT_TRUE(IsErrCompacted(s.Term(1).status()));
  EXPECT_EQ(*s.Term(2), 1u);  // the compaction point keeps its term
  EXPECT_EQ(*s.Term(5), 1u);
  EXPECT_TRUE(IsErrUnavailable(s.Term(6).status()));
  EXPECT_EQ(s.FirstIndex(), 3u);
  EXPECT_EQ(s.LastIndex(), 5u);
}

TEST(MemoryStorage_Entries, LimitsBytesButReturnsAtLeastOne) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append(Ents(1, 5, 1)).ok());
  EXPECT_EQ(s.Entries(1, 6, kNoLimit)->size(), 5u);
  EXPECT_EQ(s.Entries(1, 6, 0)->size(), 1u);
  EXPECT_EQ(s.Entries(1, 6, 2)->size(), 2u);
  ASSERT_TRUE(s.Compact(3).ok());
  EXPECT_TRUE(IsErrCompacted(s.Entries(3, 4, kNoLimit).status()));
  EXPECT_TRUE(IsErrUnavailable(s.Entries(4, 7, kNoLimit).status()));
}

TEST(MemoryStorage_Append, TruncatesConflictsAndSkipsCompacted) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append(Ents(1, 5, 1)).ok());
  ASSERT_TRUE(s.Append(Ents(3, 4, 2)).ok());
  EXPECT_EQ(s.LastIndex(), 4u);
  EXPECT_EQ(*s.Term(3), 2u);
  ASSERT_TRUE(s.Compact(3).ok());
  ASSERT_TRUE(s.Append(Ents(2, 6, 2)).ok());
  EXPECT_EQ(s.FirstIndex(), 4u);
  EXPECT_EQ(s.LastIndex(), 6u);
}

TEST(MemoryStorage_Snapshot, CreateApplyAndOutOfDate) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append(Ents(1, 5, 1)).ok());
  ConfState cs;
  cs.voters = {1, 2};
  ASSERT_TRUE(s.CreateSnapshot(4, &cs, "img").ok());
  EXPECT_TRUE(IsSnapOutOfDate(s.CreateSnapshot(3, &cs, "old").status()));
  absl::StatusOr<Snapshot> snap = s.GetSnapshot();
  EXPECT_EQ(snap->metadata.index, 4u);
  EXPECT_EQ(snap->metadata.conf_state, cs);
  MemoryStorage t;
  ASSERT_TRUE(t.ApplySnapshot(*snap).ok());
  EXPECT_EQ(t.FirstIndex(), 5u);
  EXPECT_EQ(t.LastIndex(), 4u);
  EXPECT_TRUE(IsSnapOutOfDate(t.ApplySnapshot(*snap)));
}

}  // namespace
}  // namespace lockd::raft
