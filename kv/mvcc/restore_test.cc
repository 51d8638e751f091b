// MvccStore::Restore: replacing the whole database under concurrent readers,
// durably, and without leaving partial state behind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "kv/mvcc/store.h"

namespace lockd::kv {
namespace {

class NoLeases : public LeaseOracle {
 public:
  bool LeaseExists(int64_t) const override { return false; }
};

std::string TempPath(const std::string& name) {
  static int n = 0;
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name +
         std::to_string(n++);
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// Opens a store in a fresh directory and writes keys k000..k(n-1) with
// `value`, one batch per key, raft indexes 1..n.
std::unique_ptr<MvccStore> MakeStore(const std::string& dir, int n,
                                     const std::string& value) {
  auto s = MvccStore::Open(dir);
  EXPECT_TRUE(s.ok()) << s.status();
  std::unique_ptr<MvccStore> store = *std::move(s);
  NoLeases leases;
  for (int i = 0; i < n; ++i) {
    char key[16];
    std::snprintf(key, sizeof(key), "k%03d", i);
    etcdserverpb::PutRequest req;
    req.set_key(key);
    req.set_value(value);
    etcdserverpb::PutResponse resp;
    auto b = store->BeginApply(&leases);
    EXPECT_TRUE(b->Put(req, &resp).ok());
    EXPECT_TRUE(b->Commit(static_cast<uint64_t>(i + 1)).ok());
  }
  return store;
}

// Every value of the prefix "k", or an error.
absl::StatusOr<std::vector<std::string>> Values(const MvccStore& store) {
  etcdserverpb::RangeRequest req;
  req.set_key("k");
  req.set_range_end("l");
  etcdserverpb::RangeResponse resp;
  if (absl::Status s = store.Range(req, &resp); !s.ok()) return s;
  std::vector<std::string> out;
  for (const auto& kv : resp.kvs()) out.push_back(kv.value());
  return out;
}

TEST(RestoreTest, Restore_replacesDataDurably) {
  const std::string dir = TempPath("store");
  std::unique_ptr<MvccStore> store = MakeStore(dir, 3, "old");
  std::unique_ptr<MvccStore> other = MakeStore(TempPath("other"), 50, "new");
  const std::string cp = dir + "/incoming";
  ASSERT_TRUE(other->Checkpoint(cp).ok());
  absl::StatusOr<uint64_t> cp_applied = MvccStore::CheckpointAppliedIndex(cp);
  ASSERT_TRUE(cp_applied.ok()) << cp_applied.status();
  EXPECT_EQ(*cp_applied, 50u);

  ASSERT_TRUE(store->Restore(cp).ok());
  EXPECT_FALSE(Exists(cp));  // moved in, not copied
  EXPECT_EQ(store->applied_index(), 50u);
  EXPECT_EQ(store->revision(), other->revision());
  EXPECT_EQ(store->restores(), 1u);
  auto values = Values(*store);
  ASSERT_TRUE(values.ok());
  ASSERT_EQ(values->size(), 50u);
  EXPECT_EQ((*values)[0], "new");
  // The replaced generation is deleted once nothing uses it.
  EXPECT_FALSE(Exists(dir + "/db.0"));
  EXPECT_TRUE(Exists(dir + "/db.1"));

  // Writes continue on the new database, and a restart opens it.
  NoLeases leases;
  etcdserverpb::PutRequest req;
  req.set_key("k999");
  req.set_value("after");
  etcdserverpb::PutResponse resp;
  auto b = store->BeginApply(&leases);
  ASSERT_TRUE(b->Put(req, &resp).ok());
  ASSERT_TRUE(b->Commit(51).ok());
  b.reset();
  store.reset();
  auto reopened = MvccStore::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->applied_index(), 51u);
  values = Values(**reopened);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(values->size(), 51u);
  EXPECT_EQ(values->back(), "after");
}

TEST(RestoreTest, Restore_badCheckpointKeepsOldData) {
  const std::string dir = TempPath("store");
  std::unique_ptr<MvccStore> store = MakeStore(dir, 5, "old");
  // Missing directory.
  EXPECT_FALSE(store->Restore(dir + "/nothing-here").ok());
  // Not a database: a CURRENT that names no manifest.
  const std::string bad = dir + "/bad";
  ASSERT_EQ(mkdir(bad.c_str(), 0700), 0);
  std::ofstream(bad + "/CURRENT") << "MANIFEST-999999\n";
  EXPECT_FALSE(store->Restore(bad).ok());
  EXPECT_EQ(store->applied_index(), 5u);
  EXPECT_EQ(store->restores(), 0u);
  auto values = Values(*store);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(values->size(), 5u);
  // A restart still opens the old data and drops the failed generation.
  store.reset();
  auto reopened = MvccStore::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->applied_index(), 5u);
  EXPECT_FALSE(Exists(dir + "/db.1"));
}

TEST(RestoreTest, Open_removesLeftoversOfAnInterruptedRestore) {
  const std::string dir = TempPath("store");
  MakeStore(dir, 2, "v").reset();
  // What a crash between moving the next generation in and switching
  // ACTIVE leaves behind.
  ASSERT_EQ(mkdir((dir + "/db.1").c_str(), 0700), 0);
  std::ofstream(dir + "/db.1/000001.sst") << "partial";
  std::ofstream(dir + "/ACTIVE.tmp") << "db.1\n";
  auto reopened = MvccStore::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->applied_index(), 2u);
  EXPECT_FALSE(Exists(dir + "/db.1"));
  EXPECT_FALSE(Exists(dir + "/ACTIVE.tmp"));
}

TEST(RestoreTest, Open_checkpointInPlace_thenRestoreMovesToGenerations) {
  std::unique_ptr<MvccStore> src = MakeStore(TempPath("src"), 7, "cp");
  const std::string dir = TempPath("inplace");
  ASSERT_TRUE(src->Checkpoint(dir).ok());
  auto opened = MvccStore::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<MvccStore> store = *std::move(opened);
  EXPECT_EQ(store->applied_index(), 7u);
  EXPECT_TRUE(Exists(dir + "/CURRENT"));
  std::unique_ptr<MvccStore> other = MakeStore(TempPath("other"), 9, "new");
  ASSERT_TRUE(other->Checkpoint(dir + "/incoming").ok());
  ASSERT_TRUE(store->Restore(dir + "/incoming").ok());
  EXPECT_EQ(store->applied_index(), 9u);
  // The in-place files went with the old database; the generation stays.
  EXPECT_FALSE(Exists(dir + "/CURRENT"));
  EXPECT_TRUE(Exists(dir + "/db.1/CURRENT"));
  store.reset();
  auto reopened = MvccStore::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->applied_index(), 9u);
}

// Readers never see a mix of two databases in one call, and never fail,
// while the apply thread swaps databases back and forth.
TEST(RestoreTest, Restore_concurrentReadersSeeOneDatabase) {
  const std::string dir = TempPath("store");
  std::unique_ptr<MvccStore> store = MakeStore(dir, 100, "a");
  std::unique_ptr<MvccStore> a = MakeStore(TempPath("a"), 100, "a");
  std::unique_ptr<MvccStore> b = MakeStore(TempPath("b"), 100, "b");
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        auto values = Values(*store);
        if (!values.ok() || values->size() != 100) {
          failures.fetch_add(1);
          continue;
        }
        for (const std::string& v : *values) {
          if (v != values->front()) failures.fetch_add(1);
        }
        auto hash = store->HashKV(0);
        if (!hash.ok()) failures.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  }
  constexpr int kSwaps = 20;
  for (int i = 0; i < kSwaps; ++i) {
    const std::string cp = dir + "/incoming";
    ASSERT_TRUE((i % 2 == 0 ? b : a)->Checkpoint(cp).ok());
    ASSERT_TRUE(store->Restore(cp).ok());
    // Let some reads land on this database before the next swap.
    const int seen = reads.load();
    while (reads.load() < seen + 4) std::this_thread::yield();
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(reads.load(), kSwaps * 4);
  EXPECT_EQ(store->restores(), static_cast<uint64_t>(kSwaps));
  auto values = Values(*store);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(values->front(), "a");  // the last swap installed `a`
}

}  // namespace
}  // namespace lockd::kv
