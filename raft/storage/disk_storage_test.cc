#include "raft/storage/disk_storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <random>

#include "raft/storage/disk_format.h"

namespace lockd::raft {
namespace {

std::string NewDir() {
  static int n = 0;
  std::string dir =
      std::string(std::getenv("TEST_TMPDIR")) + "/log" + std::to_string(n++);
  return dir;
}

Entry E(uint64_t index, uint64_t term, std::string data = "") {
  Entry e;
  e.index = index;
  e.term = term;
  e.data = data.empty() ? "data-" + std::to_string(index) : data;
  return e;
}

std::vector<Entry> Range(uint64_t lo, uint64_t hi, uint64_t term) {
  std::vector<Entry> out;
  for (uint64_t i = lo; i < hi; ++i) out.push_back(E(i, term));
  return out;
}

std::unique_ptr<DiskStorage> OpenOrDie(const std::string& dir,
                                       DiskStorageOptions o = {}) {
  auto s = DiskStorage::Open(dir, o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

TEST(DiskStorageTest, Save_RoundTripsAcrossReopen) {
  std::string dir = NewDir();
  {
    auto st = OpenOrDie(dir);
    EXPECT_EQ(st->FirstIndex(), 1u);
    EXPECT_EQ(st->LastIndex(), 0u);
    HardState hs{3, 2, 5};
    ASSERT_TRUE(st->Save(hs, Range(1, 11, 3), Snapshot(), true).ok());
    ConfState cs;
    cs.voters = {1, 2, 3};
    ASSERT_TRUE(st->SetInitialConfState(cs).ok());
  }
  auto st = OpenOrDie(dir);
  HardState hs;
  ConfState cs;
  ASSERT_TRUE(st->InitialState(&hs, &cs).ok());
  EXPECT_EQ(hs, (HardState{3, 2, 5}));
  EXPECT_EQ(cs.voters, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(st->LastIndex(), 10u);
  auto ents = st->Entries(2, 5, kNoLimit);
  ASSERT_TRUE(ents.ok());
  ASSERT_EQ(ents->size(), 3u);
  EXPECT_EQ((*ents)[0].data, "data-2");
  EXPECT_EQ(*st->Term(10), 3u);
  EXPECT_TRUE(IsErrUnavailable(st->Term(11).status()));
  EXPECT_TRUE(IsErrUnavailable(st->Entries(5, 12, kNoLimit).status()));
}

TEST(DiskStorageTest, Save_ConflictTruncatesSuffix) {
  auto st = OpenOrDie(NewDir());
  ASSERT_TRUE(st->Save(HardState(), Range(1, 11, 1), Snapshot(), true).ok());
  ASSERT_TRUE(st->Save(HardState(), {E(6, 2, "new6"), E(7, 2, "new7")},
                       Snapshot(), true)
                  .ok());
  EXPECT_EQ(st->LastIndex(), 7u);
  EXPECT_EQ(*st->Term(6), 2u);
  EXPECT_EQ(*st->Term(5), 1u);
  EXPECT_EQ((*st->Entries(7, 8, kNoLimit))[0].data, "new7");
  // A gap is refused and changes nothing.
  EXPECT_EQ(st->Save(HardState(), {E(9, 2)}, Snapshot(), true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st->LastIndex(), 7u);
}

TEST(DiskStorageTest, Entries_SizeLimitAndDiskBeyondCache) {
  DiskStorageOptions o;
  o.cache_bytes_max = 100;  // a handful of entries; the rest come from disk
  auto st = OpenOrDie(NewDir(), o);
  ASSERT_TRUE(st->Save(HardState(), Range(1, 201, 1), Snapshot(), true).ok());
  auto all = st->Entries(1, 201, kNoLimit);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 200u);
  for (uint64_t i = 0; i < 200; ++i) EXPECT_EQ((*all)[i].index, i + 1);
  // max_bytes: "data-1".."data-9" are 6 bytes; at least one entry always.
  EXPECT_EQ(st->Entries(1, 201, 13)->size(), 2u);
  EXPECT_EQ(st->Entries(1, 201, 0)->size(), 1u);
}

TEST(DiskStorageTest, CreateSnapshot_CompactsKeepingCatchUpEntries) {
  std::string dir = NewDir();
  {
    auto st = OpenOrDie(dir);
    ASSERT_TRUE(st->Save(HardState(), Range(1, 101, 2), Snapshot(), true).ok());
    ConfState cs;
    cs.voters = {1};
    ASSERT_TRUE(st->CreateSnapshot(80, cs, "image@80", 30).ok());
    EXPECT_TRUE(IsSnapOutOfDate(st->CreateSnapshot(70, cs, "x", 0)));
    EXPECT_EQ(st->FirstIndex(), 51u);
    EXPECT_EQ(*st->Term(50), 2u);
    EXPECT_TRUE(IsErrCompacted(st->Term(49).status()));
    EXPECT_TRUE(IsErrCompacted(st->Entries(50, 60, kNoLimit).status()));
  }
  auto st = OpenOrDie(dir);
  EXPECT_EQ(st->FirstIndex(), 51u);
  EXPECT_EQ(st->LastIndex(), 100u);
  auto snap = st->GetSnapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->metadata.index, 80u);
  EXPECT_EQ(snap->data, "image@80");
  HardState hs;
  ConfState cs;
  ASSERT_TRUE(st->InitialState(&hs, &cs).ok());
  EXPECT_EQ(cs.voters, (std::vector<uint64_t>{1}));
}

TEST(DiskStorageTest, Save_ReceivedSnapshotReplacesLog) {
  auto st = OpenOrDie(NewDir());
  ASSERT_TRUE(st->Save(HardState(), Range(1, 11, 1), Snapshot(), true).ok());
  Snapshot snap;
  snap.metadata.index = 500;
  snap.metadata.term = 7;
  snap.metadata.conf_state.voters = {1, 2, 3};
  snap.data = "descriptor";
  ASSERT_TRUE(st->Save(HardState{7, 0, 500}, {E(501, 7)}, snap, true).ok());
  EXPECT_EQ(st->FirstIndex(), 501u);
  EXPECT_EQ(st->LastIndex(), 501u);
  EXPECT_EQ(*st->Term(500), 7u);
  EXPECT_TRUE(IsErrCompacted(st->Entries(10, 11, kNoLimit).status()));
}

// Writes `n` synced Saves (entry i with commit i; the last one's data is
// `last_bytes` long) in a child process that then dies without closing
// anything, as under kill -9.
void WriteInDyingChild(const std::string& dir, uint64_t n,
                       size_t last_bytes = 100) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto st = DiskStorage::Open(dir);
    if (!st.ok()) _exit(2);
    for (uint64_t i = 1; i <= n; ++i) {
      HardState hs{1, 1, i};
      if (!(*st)
               ->Save(hs,
                      {E(i, 1, std::string(i == n ? last_bytes : 100, 'x'))},
                      Snapshot(), true)
               .ok()) {
        _exit(3);
      }
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
}

// The largest write-ahead log file in `dir`.
std::string NewestWal(const std::string& dir, off_t* size) {
  std::string newest;
  *size = 0;
  DIR* d = opendir(dir.c_str());
  while (struct dirent* ent = readdir(d)) {
    std::string name = ent->d_name;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".log") {
      struct stat sb;
      std::string path = dir + "/" + name;
      if (stat(path.c_str(), &sb) == 0 && sb.st_size > *size) {
        newest = path;
        *size = sb.st_size;
      }
    }
  }
  closedir(d);
  return newest;
}

TEST(DiskStorageTest, Open_AcknowledgedWritesSurviveKill) {
  std::string dir = NewDir();
  WriteInDyingChild(dir, 200);
  auto st = OpenOrDie(dir);
  EXPECT_EQ(st->LastIndex(), 200u);
  HardState hs;
  ConfState cs;
  ASSERT_TRUE(st->InitialState(&hs, &cs).ok());
  EXPECT_EQ(hs.commit, 200u);
}

// Where the written part of a log file ends: its size less the zeroed
// preallocation after the last record.
off_t WrittenEnd(const std::string& path, off_t size) {
  int fd = open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  std::string buf(size, '\0');
  EXPECT_EQ(pread(fd, buf.data(), size, 0), size);
  close(fd);
  off_t end = size;
  while (end > 0 && buf[end - 1] == '\0') --end;
  return end;
}

void Zero(const std::string& path, off_t from, off_t to) {
  int fd = open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  std::string zeros(to - from, '\0');
  ASSERT_EQ(pwrite(fd, zeros.data(), zeros.size(), from),
            static_cast<ssize_t>(zeros.size()));
  close(fd);
}

// After a crash that tore the final record (the last Save: entry 200,
// commit 200), the log opens with everything before it.
void ExpectTornLastSaveDropped(const std::string& dir) {
  auto st = OpenOrDie(dir);
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->LastIndex(), 199u);
  HardState hs;
  ConfState cs;
  ASSERT_TRUE(st->InitialState(&hs, &cs).ok());
  EXPECT_EQ(hs.commit, 199u);
  auto all = st->Entries(1, 200, kNoLimit);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 199u);
  // And the log keeps working after recovery, and after another restart.
  ASSERT_TRUE(
      st->Save(HardState{1, 1, 200}, {E(200, 1)}, Snapshot(), true).ok());
  EXPECT_EQ(st->LastIndex(), 200u);
  st.reset();
  st = OpenOrDie(dir);
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->LastIndex(), 200u);
}

// The log file is preallocated within its size (so a synced append need
// not write the inode): a write torn there leaves zeros where the rest of
// the record should be.
TEST(DiskStorageTest, Open_TornLastWriteDroppedNothingElseLost) {
  std::string dir = NewDir();
  WriteInDyingChild(dir, 200);
  off_t size = 0;
  std::string wal = NewestWal(dir, &size);
  ASSERT_FALSE(wal.empty());
  const off_t end = WrittenEnd(wal, size);
  ASSERT_GT(size, end) << "the log file is not preallocated within its size";
  Zero(wal, end - 7, end);
  ExpectTornLastSaveDropped(dir);
}

// A log file that ends inside its last record (one written without the
// preallocation, or cut short by a copy).
TEST(DiskStorageTest, Open_TruncatedLastWriteDroppedNothingElseLost) {
  std::string dir = NewDir();
  WriteInDyingChild(dir, 200);
  off_t size = 0;
  std::string wal = NewestWal(dir, &size);
  ASSERT_FALSE(wal.empty());
  ASSERT_EQ(truncate(wal.c_str(), WrittenEnd(wal, size) - 7), 0);
  ExpectTornLastSaveDropped(dir);
}

// A last record larger than RocksDB's 32 KiB log block is written in
// fragments, one a block; a crash after the first leaves the next block
// zeroed (the preallocation), which the log reader sees as a record broken
// in the middle.
TEST(DiskStorageTest, Open_TornFragmentedLastWriteDroppedNothingElseLost) {
  std::string dir = NewDir();
  WriteInDyingChild(dir, 200, /*last_bytes=*/80 << 10);
  off_t size = 0;
  std::string wal = NewestWal(dir, &size);
  ASSERT_FALSE(wal.empty());
  const off_t end = WrittenEnd(wal, size);
  const off_t kBlock = 32 << 10;
  // The last record's first fragment stays; every later block is zeroed.
  const off_t first_fragment_end =
      (end - (80 << 10)) / kBlock * kBlock + kBlock;
  ASSERT_LT(first_fragment_end, end);
  Zero(wal, first_fragment_end, end);
  ExpectTornLastSaveDropped(dir);
}

TEST(DiskFormatTest, DecodeEntry_AnyFlippedByteIsDataLoss) {
  Entry e = E(9, 4, "payload");
  e.type = EntryType::kConfChange;
  std::string rec = disk::EncodeEntry(e);
  auto ok = disk::DecodeEntry(9, rec);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->term, 4u);
  EXPECT_EQ(ok->type, EntryType::kConfChange);
  for (size_t i = 0; i < rec.size(); ++i) {
    std::string bad = rec;
    bad[i] ^= 0x20;
    EXPECT_EQ(disk::DecodeEntry(9, bad).status().code(),
              absl::StatusCode::kDataLoss)
        << "byte " << i;
  }
  EXPECT_EQ(disk::DecodeEntry(9, rec.substr(0, 3)).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(DiskFormatTest, HardStateAndConfState_RoundTripAndRejectCorruption) {
  HardState hs{5, 3, 42};
  EXPECT_EQ(*disk::DecodeHardState(disk::EncodeHardState(hs)), hs);
  ConfState cs;
  cs.voters = {1, 2};
  cs.voters_outgoing = {1, 2, 3};
  cs.learners_next = {3};
  cs.auto_leave = true;
  EXPECT_EQ(*disk::DecodeConfStateRecord(disk::EncodeConfStateRecord(cs)), cs);
  std::string rec = disk::EncodeHardState(hs);
  rec.back() ^= 1;
  EXPECT_EQ(disk::DecodeHardState(rec).status().code(),
            absl::StatusCode::kDataLoss);
}

// DiskStorage answers exactly like the core's MemoryStorage under a random
// sequence of appends (with conflicts), snapshots and compactions.
TEST(DiskStorageTest, RandomOps_MatchMemoryStorage) {
  std::mt19937 rng(99);
  DiskStorageOptions o;
  o.cache_bytes_max = 64;
  auto disk = OpenOrDie(NewDir(), o);
  MemoryStorage mem;
  uint64_t term = 1;
  for (int step = 0; step < 500; ++step) {
    int op = rng() % 10;
    if (op < 7) {
      uint64_t first = mem.FirstIndex();
      uint64_t last = mem.LastIndex();
      uint64_t from = last + 1;
      if (last >= first && rng() % 3 == 0) {
        from = first + rng() % (last - first + 1);  // overwrite a suffix
        ++term;
      }
      std::vector<Entry> ents = Range(from, from + 1 + rng() % 5, term);
      ASSERT_TRUE(mem.Append(ents).ok());
      ASSERT_TRUE(disk->Save(HardState(), ents, Snapshot(), false).ok());
    } else if (mem.LastIndex() > mem.FirstIndex()) {
      uint64_t idx =
          mem.FirstIndex() + rng() % (mem.LastIndex() - mem.FirstIndex() + 1);
      ConfState cs;
      cs.voters = {1};
      auto snap = mem.CreateSnapshot(idx, &cs, "img");
      if (snap.ok()) {
        ASSERT_TRUE(mem.Compact(idx).ok());
        ASSERT_TRUE(disk->CreateSnapshot(idx, cs, "img", 0).ok());
      }
    }
    ASSERT_EQ(disk->FirstIndex(), mem.FirstIndex()) << step;
    ASSERT_EQ(disk->LastIndex(), mem.LastIndex()) << step;
    for (uint64_t i = mem.FirstIndex() - 1; i <= mem.LastIndex(); ++i) {
      ASSERT_EQ(*disk->Term(i), *mem.Term(i)) << "step " << step << " i " << i;
    }
    auto de = disk->Entries(mem.FirstIndex(), mem.LastIndex() + 1, kNoLimit);
    auto me = mem.Entries(mem.FirstIndex(), mem.LastIndex() + 1, kNoLimit);
    ASSERT_TRUE(de.ok() && me.ok());
    ASSERT_EQ(de->size(), me->size());
    for (size_t i = 0; i < de->size(); ++i) {
      EXPECT_EQ((*de)[i].data, (*me)[i].data);
      EXPECT_EQ((*de)[i].term, (*me)[i].term);
    }
  }
}

}  // namespace
}  // namespace lockd::raft
