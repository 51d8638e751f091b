#include "lockd/server/restore.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.pb.h"
#include "kv/mvcc/store.h"
#include "kv/snapshot/archive.h"
#include "lockd/server/membership.h"
#include "raft/node/node.h"
#include "raft/storage/disk_storage.h"

namespace lockd {
namespace {

constexpr size_t kReadChunkBytes = 1 << 20;

absl::Status Damaged(const std::string& path, const absl::Status& s) {
  return absl::DataLossError(absl::StrCat(
      "snapshot ", path, " is damaged or not a lockd snapshot (", s.message(),
      "): use another copy, or save a new one with lockctl "
      "snapshot save"));
}

// Unpacks the snapshot file into `dir` (which must exist and be empty),
// checking its SHA-256 trailer. Returns the file's size.
absl::StatusOr<uint64_t> Unpack(const std::string& path, const std::string& dir,
                                const RestoreProgress& progress) {
  FILE* in = std::fopen(path.c_str(), "rb");
  if (in == nullptr) {
    const int err = errno;
    std::string what =
        absl::StrCat("cannot open snapshot ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(what)
                         : absl::InternalError(what);
  }
  struct stat st;
  const uint64_t total =
      fstat(fileno(in), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  kv::ArchiveWriter writer(dir);
  std::vector<char> buf(kReadChunkBytes);
  uint64_t done = 0;
  absl::Status status;
  while (status.ok()) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), in);
    if (n == 0) {
      if (std::ferror(in)) {
        status = absl::InternalError(
            absl::StrCat("read ", path, ": ", std::strerror(errno)));
      }
      break;
    }
    status = writer.Write(absl::string_view(buf.data(), n));
    done += n;
    if (progress) progress(done, total);
  }
  std::fclose(in);
  if (status.ok()) status = writer.Finish();
  if (absl::IsDataLoss(status)) return Damaged(path, status);
  if (!status.ok()) return status;
  return done;
}

absl::StatusOr<SnapshotSummary> Summarize(const kv::MvccStore& store) {
  SnapshotSummary out;
  out.revision = store.revision();
  out.compact_revision = store.compact_revision();
  absl::StatusOr<kv::MvccStore::HashResult> hash = store.HashKV(0);
  if (!hash.ok()) return hash.status();
  out.hash = hash->hash;
  etcdserverpb::RangeRequest all;
  all.set_key(std::string(1, '\0'));
  all.set_range_end(std::string(1, '\0'));
  all.set_count_only(true);
  etcdserverpb::RangeResponse resp;
  if (absl::Status s = store.Range(all, &resp); !s.ok()) return s;
  out.total_keys = resp.count();
  return out;
}

std::string WithoutTrailingSlashes(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  return PrepareDataDir(dir);
}

void RemoveAll(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace

absl::StatusOr<SnapshotSummary> RestoreSnapshot(
    const std::string& path, ServerConfig config,
    const RestoreProgress& progress) {
  const std::string data_dir = WithoutTrailingSlashes(config.data_dir);
  const std::string work = data_dir + "/member.restoring";
  std::error_code ec;
  const bool existed = std::filesystem::exists(data_dir, ec);
  bool has_files = false;
  if (existed) {
    for (const auto& entry :
         std::filesystem::directory_iterator(data_dir, ec)) {
      // What an interrupted restore left is not data.
      if (entry.path().string() != work) has_files = true;
    }
  }
  if (has_files) {
    return absl::FailedPreconditionError(
        absl::StrCat("data-dir \"", data_dir,
                     "\" exists and is not empty: restore into a new or "
                     "empty --data-dir (a restore never overwrites data)"));
  }
  if (absl::Status s = MakeDirs(data_dir); !s.ok()) return s;
  // Built beside its final name and renamed at the end: the member finds a
  // whole restore or none.
  RemoveAll(work);
  absl::StatusOr<SnapshotSummary> summary;
  auto build = [&]() -> absl::Status {
    if (absl::Status s = MakeDirs(work + "/kv"); !s.ok()) return s;
    if (absl::Status s = MakeDirs(work + "/raft"); !s.ok()) return s;
    absl::StatusOr<uint64_t> bytes = Unpack(path, work + "/kv", progress);
    if (!bytes.ok()) return bytes.status();
    {
      absl::StatusOr<std::unique_ptr<kv::MvccStore>> store =
          kv::MvccStore::Open(work + "/kv");
      if (!store.ok()) return Damaged(path, store.status());
      // The old cluster's member table goes; the new log's bootstrap entries
      // write the new one when the member first applies them.
      if (absl::Status s = (*store)->RebaseOnNewLog({kMembersRecord});
          !s.ok()) {
        return s;
      }
      summary = Summarize(**store);
      if (!summary.ok()) return summary.status();
      summary->total_bytes = *bytes;
    }
    {
      absl::StatusOr<std::unique_ptr<raft::DiskStorage>> log =
          raft::DiskStorage::Open(work + "/raft");
      if (!log.ok()) return log.status();
      std::vector<uint64_t> voters;
      for (const MemberConfig& m : config.members) voters.push_back(m.id);
      if (absl::Status s = raft::BootstrapLog(log->get(), std::move(voters),
                                              BootstrapContexts(config));
          !s.ok()) {
        return s;
      }
    }
    bool restarted = false;
    if (absl::Status s = LoadOrStoreIdentity(work, config, &restarted);
        !s.ok()) {
      return s;
    }
    const std::string member_dir = data_dir + "/member";
    if (std::rename(work.c_str(), member_dir.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot rename ", work, " to ",
                                              member_dir, ": ",
                                              std::strerror(errno)));
    }
    return kv::SyncDir(data_dir);
  };
  if (absl::Status s = build(); !s.ok()) {
    RemoveAll(work);
    if (!existed) RemoveAll(data_dir);
    return s;
  }
  return summary;
}

absl::StatusOr<SnapshotSummary> SummarizeSnapshot(
    const std::string& path, const std::string& scratch_dir,
    const RestoreProgress& progress) {
  const std::string dir = absl::StrCat(WithoutTrailingSlashes(scratch_dir),
                                       "/lockctl-status-", getpid());
  RemoveAll(dir);
  absl::StatusOr<SnapshotSummary> summary;
  auto read = [&]() -> absl::Status {
    if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
    absl::StatusOr<uint64_t> bytes = Unpack(path, dir, progress);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<std::unique_ptr<kv::MvccStore>> store =
        kv::MvccStore::Open(dir);
    if (!store.ok()) return Damaged(path, store.status());
    summary = Summarize(**store);
    if (summary.ok()) summary->total_bytes = *bytes;
    return summary.status();
  };
  absl::Status s = read();
  RemoveAll(dir);
  if (!s.ok()) return s;
  return summary;
}

}  // namespace lockd
