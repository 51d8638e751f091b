// A consistent copy of the key-value state as one byte stream: a RocksDB
// checkpoint (hard links, taken without stopping writes) packed file by file.
//
// Format (version 1), all integers big-endian:
//   magic "LOCKDSNAP1"
//   per file:  name_len:4 name size:8 bytes
//   end:       name_len:4 = 0, pad_len:2, pad_len zero bytes
//   trailer:   SHA-256 (32 bytes) of everything before it
// The padding makes everything before the trailer a multiple of 512 bytes,
// the shape etcdctl's `snapshot save` checks for, so it accepts lockd's
// snapshots too.
// Readers verify the trailer before trusting anything they unpacked.
#ifndef LOCKD_KV_SNAPSHOT_ARCHIVE_H_
#define LOCKD_KV_SNAPSHOT_ARCHIVE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lockd::kv {

// Streams a packed directory. Not thread-safe.
class ArchiveReader {
 public:
  // Packs the regular files of `dir` (no subdirectories). The files must
  // not change while reading (a checkpoint's do not).
  static absl::StatusOr<std::unique_ptr<ArchiveReader>> Open(
      const std::string& dir);
  ~ArchiveReader();

  // Total bytes the stream will have, trailer included.
  uint64_t total_bytes() const { return total_; }
  // Appends up to `max_bytes` of the stream to `*out`; returns false at
  // the end. Errors: kInternal for I/O failures.
  absl::StatusOr<bool> Next(size_t max_bytes, std::string* out);

 private:
  struct Impl;
  explicit ArchiveReader(std::unique_ptr<Impl> impl, uint64_t total);
  std::unique_ptr<Impl> impl_;
  uint64_t total_;
};

// Unpacks a stream into a directory, verifying the trailer at the end.
class ArchiveWriter {
 public:
  // `dir` must exist and be empty.
  explicit ArchiveWriter(std::string dir);
  ~ArchiveWriter();
  // Feeds the next bytes of the stream. Errors: kDataLoss (malformed),
  // kInternal (I/O).
  absl::Status Write(absl::string_view bytes);
  // Checks the stream ended exactly after a valid trailer. kDataLoss if
  // truncated or the checksum does not match.
  absl::Status Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Checks that the file at `path` is a whole archive (magic and SHA-256
// trailer). Errors: kDataLoss, kNotFound, kInternal.
absl::Status VerifyArchiveFile(const std::string& path);

// Removes a directory of regular files (such as a checkpoint) and the
// directory itself. Missing is fine.
void RemoveFlatDir(const std::string& dir);

// fsyncs a directory, so renames and creations in it are durable. Errors:
// kInternal naming the directory and the system error.
absl::Status SyncDir(const std::string& dir);

}  // namespace lockd::kv

#endif  // LOCKD_KV_SNAPSHOT_ARCHIVE_H_
