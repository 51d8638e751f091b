// Record formats of DiskStorage (format version 1). All integers are
// big-endian; every record starts with a CRC-32 (zlib's polynomial) of the
// bytes after it.
//
//   key "format"          -> "1"
//   key "hardstate"       -> crc:4 term:8 vote:8 commit:8
//   key "compact"         -> crc:4 index:8 term:8
//   key "snapshot"        -> crc:4 index:8 term:8 confstate data...
//   key "initconf"        -> crc:4 confstate
//   key 'e' index:8       -> crc:4 term:8 type:1 data...
//   confstate             =  voters, learners, voters_outgoing,
//                            learners_next (each count:4 then ids:8 each),
//                            auto_leave:1
//
// Decoders reject a record whose checksum or shape is wrong with kDataLoss.
#ifndef LOCKD_RAFT_STORAGE_DISK_FORMAT_H_
#define LOCKD_RAFT_STORAGE_DISK_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "raft/core/types.h"

namespace lockd::raft::disk {

inline constexpr char kFormatVersion[] = "1";

std::string EntryKey(uint64_t index);
std::string EncodeEntry(const Entry& e);
// `index` is the key's index; the record does not repeat it.
absl::StatusOr<Entry> DecodeEntry(uint64_t index, absl::string_view record);

std::string EncodeHardState(const HardState& hs);
absl::StatusOr<HardState> DecodeHardState(absl::string_view record);

// index and term of the compaction point.
std::string EncodeCompact(uint64_t index, uint64_t term);
absl::Status DecodeCompact(absl::string_view record, uint64_t* index,
                           uint64_t* term);

std::string EncodeSnapshot(const SnapshotMetadata& meta,
                           absl::string_view data);
absl::Status DecodeSnapshot(absl::string_view record, SnapshotMetadata* meta,
                            std::string* data);

std::string EncodeConfStateRecord(const ConfState& cs);
absl::StatusOr<ConfState> DecodeConfStateRecord(absl::string_view record);

}  // namespace lockd::raft::disk

#endif  // LOCKD_RAFT_STORAGE_DISK_FORMAT_H_
