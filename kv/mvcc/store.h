// The multi-version key-value store behind the etcd v3 KV API, on RocksDB.
//
// Semantics are etcd's: a global revision counts write transactions (every
// write in one transaction shares its main revision and gets its own sub
// revision); each key has create_revision, mod_revision, version and lease;
// old revisions stay readable until compacted.
//
// The store is the replicated state machine's data: it changes only through
// ApplyBatch, which applies committed raft entries deterministically and
// writes the raft index of the last one in the same atomic RocksDB write as
// the data it produced, so replay after a crash applies every entry exactly
// once. Memory stays bounded as data grows: nothing is indexed in memory.
//
// Thread safety: reads (Range, History, LeaseKeys, the accessors) are safe
// from any thread and see a consistent snapshot of committed batches. At most
// one ApplyBatch exists at a time, used from one thread (the apply loop).
// CompactSome may run on another thread concurrently with both. Restore
// (installing a whole new database from a snapshot) runs on the apply thread
// while no batch is open; reads concurrent with it see either the old or the
// new database, never a mix within one call.
//
// Directory layout: `dir` holds the database in a subdirectory named by the
// file `dir/ACTIVE` ("db.<generation>"; "db.0" when ACTIVE is absent). A
// Restore moves the new database in as the next generation and then replaces
// ACTIVE atomically (write, fsync, rename, fsync the directory), so a crash
// at any point leaves ACTIVE naming a complete database; Open removes any
// other generation left behind. A database directly in `dir` with no ACTIVE
// (a checkpoint, or a store from before generations) is opened in place;
// its first Restore moves on to generation 1.
#ifndef LOCKD_KV_MVCC_STORE_H_
#define LOCKD_KV_MVCC_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "etcdserverpb/rpc.pb.h"
#include "kv/mvcc/keys.h"
#include "lockd/util/metrics.h"
#include "mvccpb/kv.pb.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class Cache;
class WriteBufferManager;
}  // namespace rocksdb

namespace lockd::kv {

struct StoreOptions {
  // Memory bounds: RocksDB's block cache and all memtables together.
  size_t block_cache_bytes = 32 << 20;
  size_t memtable_bytes = 32 << 20;
  // fsync every applied batch. Off by default: the raft log is the durable
  // record, and a batch lost in a crash is replayed from it because the
  // applied index travels with the data.
  bool sync = false;
  // Where to record each apply batch's write
  // (etcd_disk_backend_commit_duration_seconds) and defragmentations
  // (etcd_disk_backend_defrag_duration_seconds, etcd_disk_defrag_inflight);
  // any may be null.
  metrics::Histogram* commit_seconds = nullptr;
  metrics::Histogram* defrag_seconds = nullptr;
  metrics::Gauge* defrag_inflight = nullptr;
  // Operations seen by this member, counted as etcd counts them
  // (etcd_mvcc_{put,delete,range,txn}_total): every put, delete and range,
  // also inside a transaction, and every transaction of more than one
  // operation. Any may be null.
  metrics::Counter* puts = nullptr;
  metrics::Counter* deletes = nullptr;
  metrics::Counter* ranges = nullptr;
  metrics::Counter* txns = nullptr;
};

// Whether a lease exists, asked when a Put attaches a key to a lease. The
// lessor implements it; it must answer deterministically from replicated
// state.
class LeaseOracle {
 public:
  virtual ~LeaseOracle() = default;
  virtual bool LeaseExists(int64_t lease_id) const = 0;
};

class ApplyBatch;

class MvccStore {
 public:
  // Opens or creates the store in `dir`. Errors: kFailedPrecondition for a
  // store written by an unknown format version; kInternal for RocksDB
  // failures (with RocksDB's message).
  static absl::StatusOr<std::unique_ptr<MvccStore>> Open(
      const std::string& dir, const StoreOptions& options = {});
  ~MvccStore();
  MvccStore(const MvccStore&) = delete;
  MvccStore& operator=(const MvccStore&) = delete;

  // etcd's Range on committed data (the request must be valid, see
  // validate.h). resp->header is left to the caller. Errors: ErrFutureRev,
  // ErrCompacted, kInternal.
  absl::Status Range(const etcdserverpb::RangeRequest& req,
                     etcdserverpb::RangeResponse* resp) const;

  // Events of revisions >= `from_revision`, in revision order, at most
  // `max_events` and about `max_bytes` of keys and values (an event batch
  // never splits a main revision, so it may hold a few more). prev_kv is not
  // filled. `*next_revision` is where to continue.
  // Errors: ErrCompacted when from_revision < compact_revision().
  absl::Status History(int64_t from_revision, size_t max_events,
                       std::vector<mvccpb::Event>* events,
                       int64_t* next_revision,
                       size_t max_bytes = SIZE_MAX) const;

  // The version of `key` live at `revision` (the newest write <= revision);
  // NotFound if the key did not exist then.
  absl::StatusOr<mvccpb::KeyValue> GetAt(const std::string& key,
                                         int64_t revision) const;

  // A checksum of the history in (compact_revision(), revision], the same on
  // every member that applied the same log whatever its physical compaction
  // progress: CRC-32 over each revision's key bytes and stored record.
  // revision <= 0 means the current one. Errors: ErrFutureRev,
  // ErrCompacted (revision below the compact revision).
  struct HashResult {
    uint32_t hash = 0;
    int64_t revision = 0;          // the revision hashed up to
    int64_t compact_revision = 0;  // the lower bound (exclusive)
  };
  absl::StatusOr<HashResult> HashKV(int64_t revision) const;

  // Writes a consistent copy of the store (a RocksDB checkpoint: hard links
  // where possible) into `dir`, which must not exist. Writers are not
  // stopped. The copy includes the applied index it reflects.
  absl::Status Checkpoint(const std::string& dir) const;

  // Replaces the whole store with the database in `checkpoint_dir` (a
  // Checkpoint() of some store, e.g. unpacked from a snapshot; it must be on
  // the same file system as the store and is moved, not copied). Durable
  // when it returns OK: a crash afterwards reopens the new data. On error
  // the old data stays in place and in use. Readers in flight finish on the
  // old database, which is closed and deleted after the last of them.
  // Must be called from the apply thread with no ApplyBatch open. Errors:
  // kFailedPrecondition (a batch is open, or the checkpoint has an unknown
  // format), kInternal (I/O or RocksDB failure).
  absl::Status Restore(const std::string& checkpoint_dir);

  // Reads the applied index recorded in a checkpoint directory without
  // installing it (opens it read-only). Errors: kInternal.
  static absl::StatusOr<uint64_t> CheckpointAppliedIndex(
      const std::string& checkpoint_dir);

  // Prepares a store copied from another cluster (a restored snapshot) to be
  // applied from a new raft log that starts at index 1: sets the applied
  // index to 0 and deletes the named records (see GetRecord), in one synced
  // write. Keys, revisions, leases and alarms stay. Must be called before
  // any ApplyBatch. Errors: kFailedPrecondition (a batch is open),
  // kInternal.
  absl::Status RebaseOnNewLog(const std::vector<std::string>& drop_records);

  // Makes every committed batch durable (syncs RocksDB's write-ahead log);
  // needed before the raft log may forget the entries behind them.
  absl::Status Sync();

  // How many times Restore replaced the database since Open.
  uint64_t restores() const { return restores_.load(); }

  // Compacts RocksDB's files (reclaiming space of deleted data) while reads
  // and writes go on. Blocks the caller until done.
  absl::Status Defragment();

  // Keys attached to `lease_id`, in key order.
  absl::Status LeaseKeys(int64_t lease_id,
                         std::vector<std::string>* keys) const;

  // Every lease record (see ApplyBatch::PutLeaseRecord) as committed, in
  // lease id order (ids compared as unsigned).
  absl::Status LeaseRecords(
      std::vector<std::pair<int64_t, std::string>>* records) const;

  // Applies committed entries. Only one batch may be open (created and not
  // yet committed or destroyed) at a time.
  std::unique_ptr<ApplyBatch> BeginApply(const LeaseOracle* leases);

  // Physically removes history made unreadable by compaction, visiting at
  // most `max_keys` keys per call. Returns true when nothing is left to do.
  absl::StatusOr<bool> CompactSome(size_t max_keys);

  // Active alarms (replicated state: raised and cleared through the log).
  std::vector<etcdserverpb::AlarmMember> Alarms() const;

  // A small record of a layer above (e.g. the cluster's member table), kept
  // with the data so it is replicated, snapshotted and restored with it.
  // Written through ApplyBatch::PutRecord. Errors: kNotFound, kInternal.
  absl::StatusOr<std::string> GetRecord(const std::string& name) const;

  int64_t revision() const { return revision_.load(); }
  int64_t compact_revision() const { return compact_revision_.load(); }
  uint64_t applied_index() const { return applied_index_.load(); }
  // Bytes on disk (SST files plus write-ahead log), approximately.
  uint64_t ApproximateSizeBytes() const;

 private:
  friend class ApplyBatch;
  // One open RocksDB database and its column families (defined in
  // store.cc). Shared by the calls using it; closed by the last owner.
  struct Db;
  // What a database's meta column family says.
  struct Meta {
    uint64_t applied = 0;
    int64_t revision = 1;
    int64_t compact_revision = 0;
    std::vector<etcdserverpb::AlarmMember> alarms;
  };
  MvccStore() = default;
  absl::StatusOr<std::shared_ptr<Db>> OpenDb(const std::string& path,
                                             Meta* meta);
  static absl::Status ReadMeta(rocksdb::DB* db,
                               rocksdb::ColumnFamilyHandle* meta_cf,
                               Meta* meta);
  // The current database: every call takes it once, so it sees one
  // database throughout even if Restore swaps it meanwhile.
  std::shared_ptr<Db> db() const;

  std::string root_;
  uint64_t generation_ = 0;  // apply thread only (Open, Restore)
  std::shared_ptr<rocksdb::Cache> cache_;
  std::shared_ptr<rocksdb::WriteBufferManager> write_buffers_;
  mutable absl::Mutex db_mu_;
  std::shared_ptr<Db> db_ ABSL_GUARDED_BY(db_mu_);
  std::atomic<uint64_t> restores_{0};
  StoreOptions options_;
  std::atomic<int64_t> revision_{0};
  std::atomic<int64_t> compact_revision_{0};
  std::atomic<uint64_t> applied_index_{0};
  std::atomic<bool> batch_open_{false};
  // CompactSome's resume point: an index key, empty to start over; valid
  // for the database it was taken in.
  std::string compact_cursor_;
  int64_t compact_cursor_revision_ = 0;
  uint64_t compact_cursor_db_ = 0;  // Db::id
  mutable absl::Mutex alarms_mu_;
  std::vector<etcdserverpb::AlarmMember> alarms_ ABSL_GUARDED_BY(alarms_mu_);
};

// Applies committed requests in order. Each method applies one request
// entirely or, returning an error, not at all (the error is the request's
// answer, as etcd's apply returns it); later requests still apply. Nothing
// is visible to readers until Commit().
class ApplyBatch {
 public:
  ~ApplyBatch();
  ApplyBatch(const ApplyBatch&) = delete;
  ApplyBatch& operator=(const ApplyBatch&) = delete;

  absl::Status Put(const etcdserverpb::PutRequest& req,
                   etcdserverpb::PutResponse* resp);
  absl::Status DeleteRange(const etcdserverpb::DeleteRangeRequest& req,
                           etcdserverpb::DeleteRangeResponse* resp);
  absl::Status Txn(const etcdserverpb::TxnRequest& req,
                   etcdserverpb::TxnResponse* resp);
  // Logical compaction: revisions below req.revision become unreadable now;
  // CompactSome() reclaims the space later. Errors: ErrCompacted when not
  // above the current compact revision, ErrFutureRev.
  absl::Status Compact(const etcdserverpb::CompactionRequest& req,
                       etcdserverpb::CompactionResponse* resp);
  // A Range that sees this batch's writes (for serialized reads).
  absl::Status Range(const etcdserverpb::RangeRequest& req,
                     etcdserverpb::RangeResponse* resp);
  // etcd's Alarm: ACTIVATE adds (member, alarm), DEACTIVATE removes it,
  // GET lists. While NOSPACE is active, Put and any Txn that writes fail
  // with ErrNoSpace; reads, deletes and compaction still work, so operators
  // can free space. While CORRUPT is active, Put, DeleteRange, Txn and
  // Compact fail with ErrCorrupt (Range still works), as etcd's.
  absl::Status Alarm(const etcdserverpb::AlarmRequest& req,
                     etcdserverpb::AlarmResponse* resp);
  // Whether an alarm of this type is active, as of this batch.
  bool HasAlarm(etcdserverpb::AlarmType type) const;

  // Writes a record (see MvccStore::GetRecord) in this batch's atomic write.
  void PutRecord(const std::string& name, const std::string& value);

  // Deletes every key attached to `lease_id` in one revision (lease revoke
  // and expiry). Returns the number deleted.
  absl::StatusOr<int64_t> DeleteLeaseKeys(int64_t lease_id);

  // The lessor's record of a lease (opaque bytes), written with the batch so
  // lease state is exactly as durable, and as copied by Checkpoint(), as the
  // keys attached to it. Neither makes a revision.
  void PutLeaseRecord(int64_t lease_id, const std::string& record);
  void DeleteLeaseRecord(int64_t lease_id);

  // The store revision including this batch's writes so far.
  int64_t revision() const { return revision_; }
  // Events produced since the last call, in revision order, with prev_kv.
  std::vector<mvccpb::Event> TakeEvents();

  // Writes the batch and `applied_index` in one atomic write; afterwards
  // readers see it. The batch is finished whether or not it succeeds; a
  // failure (kInternal) means the disk failed and the process must stop.
  absl::Status Commit(uint64_t applied_index);

 private:
  friend class MvccStore;
  struct Impl;
  template <typename Fn>
  absl::Status ApplyOne(Fn&& fn);
  absl::Status PutLocked(const etcdserverpb::PutRequest& req,
                         etcdserverpb::PutResponse* resp);
  absl::Status DeleteRangeLocked(const etcdserverpb::DeleteRangeRequest& req,
                                 etcdserverpb::DeleteRangeResponse* resp);
  absl::Status TxnLocked(const etcdserverpb::TxnRequest& req,
                         etcdserverpb::TxnResponse* resp);
  absl::Status RangeLocked(const etcdserverpb::RangeRequest& req,
                           etcdserverpb::RangeResponse* resp);
  absl::StatusOr<bool> EvaluateCompare(const etcdserverpb::Compare& cmp);
  // Writes `kv` as the key's new version; both `kv` and `*prev` (the live
  // version it replaces, if any) move into the batch's event.
  void WritePut(mvccpb::KeyValue kv, mvccpb::KeyValue* prev);
  void WriteTombstone(const mvccpb::KeyValue& prev);
  // The main revision this request's writes get.
  int64_t write_revision() const { return revision_ + 1; }
  explicit ApplyBatch(MvccStore* store, const LeaseOracle* leases);

  MvccStore* store_;
  std::shared_ptr<MvccStore::Db> db_;  // the database this batch writes to
  std::unique_ptr<Impl> impl_;
  int64_t revision_;
  int64_t compact_revision_;
  std::vector<etcdserverpb::AlarmMember> alarms_;
  bool alarms_changed_ = false;
};

}  // namespace lockd::kv

#endif  // LOCKD_KV_MVCC_STORE_H_
