#include "kv/snapshot/archive.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <random>

#include "kv/mvcc/store.h"

namespace lockd::kv {
namespace {

std::string Tmp(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
}

std::string Pack(const std::string& dir, std::mt19937& rng) {
  auto reader = ArchiveReader::Open(dir);
  EXPECT_TRUE(reader.ok()) << reader.status();
  std::string stream;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(1 + rng() % 5000, &stream);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
  }
  EXPECT_EQ(stream.size(), (*reader)->total_bytes());
  // The shape etcdctl's snapshot save checks for.
  EXPECT_EQ(stream.size() % 512, 32u);
  return stream;
}

absl::Status Unpack(const std::string& stream, const std::string& dir,
                    std::mt19937& rng) {
  mkdir(dir.c_str(), 0700);
  ArchiveWriter writer(dir);
  size_t pos = 0;
  while (pos < stream.size()) {
    size_t n = std::min<size_t>(1 + rng() % 7000, stream.size() - pos);
    if (absl::Status s = writer.Write(absl::string_view(stream).substr(pos, n));
        !s.ok()) {
      return s;
    }
    pos += n;
  }
  return writer.Finish();
}

TEST(ArchiveTest, CheckpointPackUnpack_RoundTripsAStore) {
  std::mt19937 rng(5);
  auto store = MvccStore::Open(Tmp("src"));
  ASSERT_TRUE(store.ok());
  for (int i = 0; i < 500; ++i) {
    etcdserverpb::PutRequest req;
    req.set_key("key-" + std::to_string(i));
    req.set_value(std::string(100 + i, 'v'));
    etcdserverpb::PutResponse resp;
    auto b = (*store)->BeginApply(nullptr);
    ASSERT_TRUE(b->Put(req, &resp).ok());
    ASSERT_TRUE(b->Commit(i + 1).ok());
  }
  ASSERT_TRUE((*store)->Checkpoint(Tmp("ckpt")).ok());
  std::string stream = Pack(Tmp("ckpt"), rng);
  ASSERT_TRUE(Unpack(stream, Tmp("restored"), rng).ok());

  auto restored = MvccStore::Open(Tmp("restored"));
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->applied_index(), 500u);
  EXPECT_EQ((*restored)->revision(), (*store)->revision());
  EXPECT_EQ((*restored)->HashKV(0)->hash, (*store)->HashKV(0)->hash);
}

TEST(ArchiveTest, Unpack_RejectsCorruptionAndTruncation) {
  std::mt19937 rng(6);
  std::string src = Tmp("files");
  mkdir(src.c_str(), 0700);
  for (int i = 0; i < 3; ++i) {
    FILE* f = std::fopen((src + "/f" + std::to_string(i)).c_str(), "w");
    std::fputs(std::string(10000 * (i + 1), 'a' + i).c_str(), f);
    std::fclose(f);
  }
  std::string stream = Pack(src, rng);
  ASSERT_TRUE(Unpack(stream, Tmp("ok"), rng).ok());

  std::string file = Tmp("snap.db");
  FILE* out = std::fopen(file.c_str(), "w");
  std::fwrite(stream.data(), 1, stream.size(), out);
  std::fclose(out);
  EXPECT_TRUE(VerifyArchiveFile(file).ok());
  out = std::fopen(file.c_str(), "w");
  std::fwrite(stream.data(), 1, stream.size() - 3, out);
  std::fclose(out);
  EXPECT_EQ(VerifyArchiveFile(file).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifyArchiveFile(Tmp("missing")).code(),
            absl::StatusCode::kNotFound);

  std::string flipped = stream;
  flipped[stream.size() / 2] ^= 1;
  EXPECT_EQ(Unpack(flipped, Tmp("flipped"), rng).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(
      Unpack(stream.substr(0, stream.size() - 1), Tmp("short"), rng).code(),
      absl::StatusCode::kDataLoss);
  EXPECT_EQ(Unpack("not a snapshot at all", Tmp("junk"), rng).code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lockd::kv
