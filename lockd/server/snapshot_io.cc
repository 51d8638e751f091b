#include "lockd/server/snapshot_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kv/snapshot/archive.h"
#include "lockd/util/log.h"

namespace lockd {
namespace {

class CheckpointSource final : public raft::SnapshotSource {
 public:
  CheckpointSource(std::string dir, std::unique_ptr<kv::ArchiveReader> reader)
      : dir_(std::move(dir)), reader_(std::move(reader)) {}
  ~CheckpointSource() override {
    reader_.reset();
    kv::RemoveFlatDir(dir_);
  }
  uint64_t total_bytes() const override { return reader_->total_bytes(); }
  absl::StatusOr<bool> Next(size_t max_bytes, std::string* out) override {
    return reader_->Next(max_bytes, out);
  }

 private:
  const std::string dir_;
  std::unique_ptr<kv::ArchiveReader> reader_;
};

class StagingSink final : public raft::SnapshotSink {
 public:
  explicit StagingSink(std::string dir) : dir_(std::move(dir)), writer_(dir_) {}
  ~StagingSink() override {
    if (!finished_) kv::RemoveFlatDir(dir_);
  }
  absl::Status Write(absl::string_view bytes) override {
    return writer_.Write(bytes);
  }
  absl::StatusOr<std::string> Finish() override {
    if (absl::Status s = writer_.Finish(); !s.ok()) return s;
    // The files are fsynced as written; their directory entries too now.
    if (absl::Status s = kv::SyncDir(dir_); !s.ok()) return s;
    finished_ = true;
    return dir_;
  }

 private:
  const std::string dir_;
  kv::ArchiveWriter writer_;
  bool finished_ = false;
};

}  // namespace

StoreSnapshotIo::StoreSnapshotIo(std::string dir, kv::MvccStore* store)
    : dir_(std::move(dir)), store_(store) {
  mkdir(dir_.c_str(), 0700);
  std::vector<std::string> leftovers;
  if (DIR* d = opendir(dir_.c_str())) {
    while (struct dirent* ent = readdir(d)) {
      std::string name = ent->d_name;
      if (name != "." && name != "..") leftovers.push_back(dir_ + "/" + name);
    }
    closedir(d);
  }
  for (const std::string& path : leftovers) kv::RemoveFlatDir(path);
}

absl::StatusOr<std::unique_ptr<raft::SnapshotSource>>
StoreSnapshotIo::OpenSource(const raft::Message& m) {
  const std::string dir =
      absl::StrCat(dir_, "/send-", m.to, "-", seq_.fetch_add(1));
  if (absl::Status s = store_->Checkpoint(dir); !s.ok()) {
    kv::RemoveFlatDir(dir);
    return s;
  }
  absl::StatusOr<std::unique_ptr<kv::ArchiveReader>> reader =
      kv::ArchiveReader::Open(dir);
  if (!reader.ok()) {
    kv::RemoveFlatDir(dir);
    return reader.status();
  }
  Logf(LogLevel::kInfo, "snapshot",
       "sending the key-value store at index %d to %x (raft snapshot index "
       "%d): %d bytes",
       store_->applied_index(), m.to, m.snapshot.metadata.index,
       (*reader)->total_bytes());
  return std::unique_ptr<raft::SnapshotSource>(
      new CheckpointSource(dir, *std::move(reader)));
}

absl::StatusOr<std::unique_ptr<raft::SnapshotSink>> StoreSnapshotIo::OpenSink(
    const raft::Message& m) {
  const std::string dir =
      absl::StrCat(dir_, "/recv-", m.from, "-", m.snapshot.metadata.index, "-",
                   seq_.fetch_add(1));
  if (mkdir(dir.c_str(), 0700) != 0) {
    return absl::InternalError(
        absl::StrCat("create ", dir, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<raft::SnapshotSink>(new StagingSink(dir));
}

}  // namespace lockd
