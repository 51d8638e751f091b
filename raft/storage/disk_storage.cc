#include "raft/storage/disk_storage.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lockd/util/clock.h"
#include "raft/storage/disk_format.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace lockd::raft {
namespace {

constexpr char kFormatKey[] = "format";
constexpr char kHardStateKey[] = "hardstate";
constexpr char kCompactKey[] = "compact";
constexpr char kSnapshotKey[] = "snapshot";
constexpr char kInitConfKey[] = "initconf";

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  return absl::InternalError(
      absl::StrCat("raft log ", what, ": ", s.ToString()));
}

absl::string_view View(const rocksdb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}

uint64_t IndexOfKey(const rocksdb::Slice& key) {
  uint64_t v = 0;
  for (size_t i = 1; i < 9 && i < key.size(); ++i) {
    v = (v << 8) | static_cast<uint8_t>(key[i]);
  }
  return v;
}

// RocksDB preallocates each write-ahead log file in steps (about a tenth
// more than a memtable). By default the preallocated space lies beyond the
// file's size, so every synced append grows the size and its fdatasync
// writes the inode as well as the data: two writes to the device. With the
// size set over the whole step, an append inside it syncs its data alone
// (about 20% less time a sync here; etcd's WAL preallocates the same way).
// On recovery the log reader skips the zeroed rest of a step; a record torn
// by a crash ends the log there, as a torn record at the end of a file does.
class SizedLogPreallocation : public rocksdb::FileSystemWrapper {
 public:
  explicit SizedLogPreallocation(std::shared_ptr<rocksdb::FileSystem> target)
      : FileSystemWrapper(std::move(target)) {}
  const char* Name() const override { return "SizedLogPreallocation"; }
  rocksdb::FileOptions OptimizeForLogWrite(
      const rocksdb::FileOptions& file_options,
      const rocksdb::DBOptions& db_options) const override {
    rocksdb::FileOptions o =
        target()->OptimizeForLogWrite(file_options, db_options);
    o.fallocate_with_keep_size = false;
    return o;
  }
};

// Shared by every log of the process, and never destroyed (a database must
// not outlive its Env).
rocksdb::Env* LogEnv() {
  static rocksdb::Env* const env =
      rocksdb::NewCompositeEnv(std::make_shared<SizedLogPreallocation>(
                                   rocksdb::FileSystem::Default()))
          .release();
  return env;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DiskStorage>> DiskStorage::Open(
    const std::string& dir, const DiskStorageOptions& options) {
  auto st = std::unique_ptr<DiskStorage>(new DiskStorage());
  st->options_ = options;
  rocksdb::Options o;
  o.create_if_missing = true;
  // After a crash, keep every write before a torn or corrupt tail.
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // The log is written once, read back only for a lagging follower (most
  // reads hit the entry cache) and truncated after each snapshot: small
  // memtables and a small block cache keep a member's memory low.
  o.write_buffer_size = 4 << 20;
  o.max_write_buffer_number = 2;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(4 << 20);
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  o.keep_log_file_num = 2;
  o.env = LogEnv();
  o.max_open_files = 64;
  rocksdb::Status s = rocksdb::DB::Open(o, dir, &st->db_);
  if (!s.ok()) return FromRocks(s, "open " + dir);

  rocksdb::ReadOptions ro;
  std::string v;
  s = st->db_->Get(ro, kFormatKey, &v);
  if (s.IsNotFound()) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    s = st->db_->Put(wo, kFormatKey, disk::kFormatVersion);
    if (!s.ok()) return FromRocks(s, "write format");
  } else if (!s.ok()) {
    return FromRocks(s, "read format");
  } else if (v != disk::kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("the raft log in ", dir, " has format version ", v,
                     ", which this lockd (format ", disk::kFormatVersion,
                     ") cannot read: run a lockd release that supports it"));
  }

  if ((s = st->db_->Get(ro, kHardStateKey, &v)).ok()) {
    absl::StatusOr<HardState> hs = disk::DecodeHardState(v);
    if (!hs.ok()) return hs.status();
    st->hard_state_ = *hs;
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read hard state");
  }
  if ((s = st->db_->Get(ro, kCompactKey, &v)).ok()) {
    if (absl::Status d =
            disk::DecodeCompact(v, &st->compact_index_, &st->compact_term_);
        !d.ok()) {
      return d;
    }
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read compaction point");
  }
  if ((s = st->db_->Get(ro, kSnapshotKey, &v)).ok()) {
    if (absl::Status d =
            disk::DecodeSnapshot(v, &st->snapshot_, &st->snapshot_data_);
        !d.ok()) {
      return d;
    }
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read snapshot");
  }
  if ((s = st->db_->Get(ro, kInitConfKey, &v)).ok()) {
    absl::StatusOr<ConfState> cs = disk::DecodeConfStateRecord(v);
    if (!cs.ok()) return cs.status();
    st->initial_conf_ = *std::move(cs);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read initial configuration");
  }

  // The last index is the highest entry key; entries must be contiguous
  // from the compaction point.
  st->last_index_ = st->compact_index_;
  std::unique_ptr<rocksdb::Iterator> it(st->db_->NewIterator(ro));
  it->SeekForPrev(disk::EntryKey(UINT64_MAX));
  if (it->Valid() && it->key().size() == 9 && it->key()[0] == 'e') {
    uint64_t last = IndexOfKey(it->key());
    if (last > st->compact_index_) st->last_index_ = last;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  // Verify every entry of the log once (checksums, no holes) and keep the
  // tail in the cache.
  for (uint64_t i = st->compact_index_ + 1; i <= st->last_index_; ++i) {
    absl::StatusOr<Entry> e = st->ReadEntry(i);
    if (!e.ok()) {
      return absl::DataLossError(
          absl::StrCat("raft log is missing or damaged at index ", i, " (",
                       e.status().message(), ")"));
    }
    st->cache_bytes_ += e->PayloadSize();
    st->cache_.push_back(*std::move(e));
    st->TrimCache();
  }
  return st;
}

DiskStorage::~DiskStorage() { delete db_; }

absl::StatusOr<Entry> DiskStorage::ReadEntry(uint64_t index) const {
  std::string v;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), disk::EntryKey(index), &v);
  if (s.IsNotFound()) {
    return absl::DataLossError(
        absl::StrCat("raft log entry ", index, " is missing"));
  }
  if (!s.ok()) return FromRocks(s, "read entry");
  return disk::DecodeEntry(index, v);
}

const Entry* DiskStorage::Cached(uint64_t index) const {
  if (cache_.empty() || index < cache_.front().index ||
      index > cache_.back().index) {
    return nullptr;
  }
  return &cache_[index - cache_.front().index];
}

void DiskStorage::TrimCache() {
  while (cache_.size() > 1 && cache_bytes_ > options_.cache_bytes_max) {
    cache_bytes_ -= cache_.front().PayloadSize();
    cache_.pop_front();
  }
}

absl::Status DiskStorage::InitialState(HardState* hard_state,
                                       ConfState* conf_state) const {
  *hard_state = hard_state_;
  *conf_state = snapshot_.index > 0 ? snapshot_.conf_state : initial_conf_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Entry>> DiskStorage::Entries(
    uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  if (lo <= compact_index_) return ErrCompacted();
  if (hi > last_index_ + 1 || lo > hi) return ErrUnavailable();
  std::vector<Entry> out;
  uint64_t bytes = 0;
  auto add = [&](Entry e) {
    bytes += e.PayloadSize();
    if (!out.empty() && bytes > max_bytes) return false;
    out.push_back(std::move(e));
    return true;
  };
  uint64_t i = lo;
  // Older entries from disk, in one ordered scan.
  uint64_t cache_first =
      cache_.empty() ? last_index_ + 1 : cache_.front().index;
  if (i < hi && i < cache_first) {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(disk::EntryKey(i)); i < hi && i < cache_first; ++i) {
      if (!it->Valid() || IndexOfKey(it->key()) != i) {
        if (!it->status().ok()) return FromRocks(it->status(), "scan");
        return absl::DataLossError(
            absl::StrCat("raft log entry ", i, " is missing"));
      }
      absl::StatusOr<Entry> e = disk::DecodeEntry(i, View(it->value()));
      if (!e.ok()) return e.status();
      if (!add(*std::move(e))) return out;
      it->Next();
    }
  }
  for (; i < hi; ++i) {
    if (!add(*Cached(i))) break;
  }
  return out;
}

absl::StatusOr<uint64_t> DiskStorage::Term(uint64_t index) const {
  if (index < compact_index_) return ErrCompacted();
  if (index == compact_index_) return compact_term_;
  if (index > last_index_) return ErrUnavailable();
  if (const Entry* e = Cached(index)) return e->term;
  absl::StatusOr<Entry> e = ReadEntry(index);
  if (!e.ok()) return e.status();
  return e->term;
}

uint64_t DiskStorage::FirstIndex() const { return compact_index_ + 1; }
uint64_t DiskStorage::LastIndex() const { return last_index_; }

absl::StatusOr<Snapshot> DiskStorage::GetSnapshot() const {
  Snapshot snap;
  snap.metadata = snapshot_;
  snap.data = snapshot_data_;
  return snap;
}

absl::Status DiskStorage::Save(const HardState& hard_state,
                               const std::vector<Entry>& entries,
                               const Snapshot& snapshot, bool sync) {
  if (options_.fail_writes_for_testing) {
    return absl::InternalError("raft log write: injected failure");
  }
  rocksdb::WriteBatch wb;
  uint64_t compact_index = compact_index_, compact_term = compact_term_;
  uint64_t last_index = last_index_;
  const bool has_snapshot = !snapshot.IsEmpty();
  if (has_snapshot) {
    if (snapshot.metadata.index <= snapshot_.index) return ErrSnapOutOfDate();
    // The snapshot replaces the whole log.
    wb.DeleteRange(disk::EntryKey(0), disk::EntryKey(UINT64_MAX));
    wb.Put(kSnapshotKey,
           disk::EncodeSnapshot(snapshot.metadata, snapshot.data));
    compact_index = snapshot.metadata.index;
    compact_term = snapshot.metadata.term;
    wb.Put(kCompactKey, disk::EncodeCompact(compact_index, compact_term));
    last_index = compact_index;
  }
  size_t skip = 0;  // entries already covered by the compaction point
  while (skip < entries.size() && entries[skip].index <= compact_index) ++skip;
  uint64_t first_new = 0;
  if (skip < entries.size()) {
    first_new = entries[skip].index;
    if (first_new > last_index + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("raft log append leaves a gap: last index ", last_index,
                       ", first new entry ", first_new));
    }
    for (size_t i = skip + 1; i < entries.size(); ++i) {
      if (entries[i].index != entries[i - 1].index + 1) {
        return absl::InvalidArgumentError("raft log append: not contiguous");
      }
    }
    if (first_new <= last_index) {
      wb.DeleteRange(disk::EntryKey(first_new), disk::EntryKey(last_index + 1));
    }
    for (size_t i = skip; i < entries.size(); ++i) {
      wb.Put(disk::EntryKey(entries[i].index), disk::EncodeEntry(entries[i]));
    }
    last_index = entries.back().index;
  }
  if (!hard_state.IsEmpty()) {
    wb.Put(kHardStateKey, disk::EncodeHardState(hard_state));
  }
  if (wb.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  const absl::Time start = MonotonicNow();
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) return FromRocks(s, "write");
  if (sync && options_.sync_seconds != nullptr) {
    options_.sync_seconds->ObserveDuration(MonotonicNow() - start);
  }
  if (options_.write_bytes != nullptr) {
    options_.write_bytes->Add(static_cast<int64_t>(wb.GetDataSize()));
  }

  // Mirror the write in memory.
  if (has_snapshot) {
    snapshot_ = snapshot.metadata;
    snapshot_data_ = snapshot.data;
    compact_index_ = compact_index;
    compact_term_ = compact_term;
    cache_.clear();
    cache_bytes_ = 0;
  }
  if (first_new != 0) {
    while (!cache_.empty() && cache_.back().index >= first_new) {
      cache_bytes_ -= cache_.back().PayloadSize();
      cache_.pop_back();
    }
    if (!cache_.empty() && cache_.back().index + 1 != first_new) {
      cache_.clear();
      cache_bytes_ = 0;
    }
    for (size_t i = skip; i < entries.size(); ++i) {
      cache_bytes_ += entries[i].PayloadSize();
      cache_.push_back(entries[i]);
    }
    TrimCache();
  }
  last_index_ = last_index;
  if (!hard_state.IsEmpty()) hard_state_ = hard_state;
  return absl::OkStatus();
}

absl::Status DiskStorage::CreateSnapshot(uint64_t index,
                                         const ConfState& conf_state,
                                         std::string data,
                                         uint64_t keep_entries) {
  if (index <= snapshot_.index) return ErrSnapOutOfDate();
  if (index > last_index_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot index ", index, " is beyond the last index ", last_index_));
  }
  absl::StatusOr<uint64_t> term = Term(index);
  if (!term.ok()) return term.status();
  SnapshotMetadata meta;
  meta.index = index;
  meta.term = *term;
  meta.conf_state = conf_state;

  uint64_t compact_index = compact_index_, compact_term = compact_term_;
  if (index > keep_entries && index - keep_entries > compact_index_) {
    compact_index = index - keep_entries;
    absl::StatusOr<uint64_t> t = Term(compact_index);
    if (!t.ok()) return t.status();
    compact_term = *t;
  }
  rocksdb::WriteBatch wb;
  wb.Put(kSnapshotKey, disk::EncodeSnapshot(meta, data));
  if (compact_index != compact_index_) {
    wb.DeleteRange(disk::EntryKey(0), disk::EntryKey(compact_index + 1));
    wb.Put(kCompactKey, disk::EncodeCompact(compact_index, compact_term));
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) return FromRocks(s, "snapshot");
  snapshot_ = meta;
  snapshot_data_ = std::move(data);
  compact_index_ = compact_index;
  compact_term_ = compact_term;
  while (!cache_.empty() && cache_.front().index <= compact_index_) {
    cache_bytes_ -= cache_.front().PayloadSize();
    cache_.pop_front();
  }
  return absl::OkStatus();
}

absl::Status DiskStorage::SetInitialConfState(const ConfState& conf_state) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s =
      db_->Put(wo, kInitConfKey, disk::EncodeConfStateRecord(conf_state));
  if (!s.ok()) return FromRocks(s, "write initial configuration");
  initial_conf_ = conf_state;
  return absl::OkStatus();
}

}  // namespace lockd::raft
