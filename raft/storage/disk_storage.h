// The raft log, hard state and snapshot metadata of one member, durable in a
// RocksDB database of their own (apart from the key-value data, so only this
// database pays for synced writes).
//
// DiskStorage implements raft::Storage for the core and adds the writes the
// node loop makes for each Ready. Every Save() is a single RocksDB write
// batch, synced when asked, so a Ready's entries and hard state become
// durable together (group commit). Entries carry a CRC-32 checked on every
// read from disk; a mismatch is reported as kDataLoss and the member must
// not continue. After a crash, RocksDB's point-in-time WAL recovery drops a
// torn final write and keeps everything before it. The WAL's files are
// preallocated within their size (see SizedLogPreallocation), so a torn
// write may end in zeros rather than at the end of the file; recovery
// treats both alike.
//
// Thread-compatible: owned by the node loop, which both drives the core (the
// reader) and persists each Ready (the writer). No lock is held across I/O
// because there is no lock.
#ifndef LOCKD_RAFT_STORAGE_DISK_STORAGE_H_
#define LOCKD_RAFT_STORAGE_DISK_STORAGE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lockd/util/metrics.h"
#include "raft/core/storage.h"
#include "raft/core/types.h"

namespace rocksdb {
class DB;
}  // namespace rocksdb

namespace lockd::raft {

struct DiskStorageOptions {
  // Recent entries kept in memory so the leader's sends to followers do not
  // read the disk; older ones are read from RocksDB.
  uint64_t cache_bytes_max = 8 << 20;
  // Failure injection for tests: every write returns this error when set.
  bool fail_writes_for_testing = false;
  // Where to record each synced write's duration
  // (etcd_disk_wal_fsync_duration_seconds) and the bytes written
  // (etcd_disk_wal_write_bytes_total); either may be null.
  metrics::Histogram* sync_seconds = nullptr;
  metrics::Gauge* write_bytes = nullptr;
};

class DiskStorage final : public Storage {
 public:
  // Opens or creates the log in `dir`. Errors: kFailedPrecondition (unknown
  // format version), kDataLoss (a checksum mismatch in the metadata),
  // kInternal (RocksDB failure, with its message).
  static absl::StatusOr<std::unique_ptr<DiskStorage>> Open(
      const std::string& dir, const DiskStorageOptions& options = {});
  ~DiskStorage() override;

  // raft::Storage. Errors as documented there, plus kDataLoss for an entry
  // whose checksum does not match and kInternal for RocksDB failures.
  absl::Status InitialState(HardState* hard_state,
                            ConfState* conf_state) const override;
  absl::StatusOr<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi,
                                             uint64_t max_bytes) const override;
  absl::StatusOr<uint64_t> Term(uint64_t index) const override;
  uint64_t FirstIndex() const override;
  uint64_t LastIndex() const override;
  absl::StatusOr<Snapshot> GetSnapshot() const override;

  // Persists one Ready's worth in one write: `snapshot` (if not empty)
  // replaces the log up to its index, then `entries` are appended (an entry
  // at an index already present truncates the log from there), then
  // `hard_state` (if not empty) is stored. `sync` makes the write durable
  // before returning. Entries must be contiguous and must not leave a gap
  // after LastIndex(). Errors: kInvalidArgument for a gap, kInternal.
  absl::Status Save(const HardState& hard_state,
                    const std::vector<Entry>& entries, const Snapshot& snapshot,
                    bool sync);

  // Records a snapshot the state machine took at `index` (<= LastIndex())
  // with the given configuration and descriptor `data`, and compacts the log
  // to `index - keep_entries` (entries kept so slow followers can catch up
  // without a snapshot). Errors: ErrSnapOutOfDate() if not newer than the
  // current snapshot; kInvalidArgument if index > LastIndex().
  absl::Status CreateSnapshot(uint64_t index, const ConfState& conf_state,
                              std::string data, uint64_t keep_entries);

  // Sets the configuration reported when there is no snapshot yet (a new
  // cluster's bootstrap). Durable.
  absl::Status SetInitialConfState(const ConfState& conf_state);

 private:
  DiskStorage() = default;
  absl::StatusOr<Entry> ReadEntry(uint64_t index) const;
  const Entry* Cached(uint64_t index) const;
  void TrimCache();

  rocksdb::DB* db_ = nullptr;
  DiskStorageOptions options_;

  HardState hard_state_;
  SnapshotMetadata snapshot_;
  std::string snapshot_data_;
  ConfState initial_conf_;
  // The log holds entries (compact_index_, last_index_]; compact_term_ is the
  // term of the entry at compact_index_ (the "dummy" the core compares with).
  uint64_t compact_index_ = 0;
  uint64_t compact_term_ = 0;
  uint64_t last_index_ = 0;
  // The newest entries, contiguous, ending at last_index_.
  std::deque<Entry> cache_;
  uint64_t cache_bytes_ = 0;
};

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_STORAGE_DISK_STORAGE_H_
