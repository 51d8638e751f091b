// On-disk format (format version 1), one RocksDB database with these column
// families. Integers are big-endian; "key" is a user key.
//
//   meta     "format"           -> "1"
//            "applied_index"    -> u64: raft index of the last applied entry
//            "revision"         -> u64: current main revision
//            "compact_revision" -> u64: revisions below it are unreadable
//            "compact_done"     -> u64: history below it is physically gone
//            "alarms"           -> etcdserverpb.AlarmResponse (alarms only)
//   history  main:u64 sub:u64   -> flag:1 ('p' put | 't' tombstone)
//                                  mvccpb.KeyValue (a tombstone has only key
//                                  and mod_revision)
//   index    escaped(key) ~main:u64 ~sub:u64 -> flag:1
//            (see keys.h; a key's newest revision sorts first)
//   latest   key -> mvccpb.KeyValue of the live version (absent: deleted)
//   lease    lease_id:u64 key   -> "" for every live key attached to a lease
//
// Every ApplyBatch is one atomic write covering all column families and the
// meta keys, so "applied_index" always matches the data. Compaction first
// raises compact_revision (in an ApplyBatch), then CompactSome deletes, per
// key, history and index entries older than the key's newest revision at or
// below compact_revision, and tombstones below it.
#include "kv/mvcc/store.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kv/mvcc/errors.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/slice.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/utilities/write_batch_with_index.h"
#include "rocksdb/write_buffer_manager.h"

namespace lockd::kv {
namespace {

constexpr char kFormatVersion[] = "1";
constexpr char kMetaFormat[] = "format";
constexpr char kMetaAppliedIndex[] = "applied_index";
constexpr char kMetaRevision[] = "revision";
constexpr char kMetaCompactRevision[] = "compact_revision";
constexpr char kMetaCompactDone[] = "compact_done";
constexpr char kMetaAlarms[] = "alarms";

constexpr char kPutFlag = 'p';
constexpr char kTombstoneFlag = 't';

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  return absl::InternalError(
      absl::StrCat("rocksdb ", what, ": ", s.ToString()));
}

std::string U64(uint64_t v) {
  std::string out;
  AppendBigEndian64(&out, v);
  return out;
}

absl::string_view View(const rocksdb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}

bool ParseKv(absl::string_view bytes, mvccpb::KeyValue* kv) {
  return kv->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

std::string LeaseKey(int64_t lease, absl::string_view key) {
  std::string out = U64(static_cast<uint64_t>(lease));
  out.append(key.data(), key.size());
  return out;
}

// Reads committed data (a snapshot) or a batch's view of it.
class KvReader {
 public:
  virtual ~KvReader() = default;
  // NotFound when absent.
  virtual absl::StatusOr<std::string> Get(rocksdb::ColumnFamilyHandle* cf,
                                          const std::string& key) = 0;
  virtual std::unique_ptr<rocksdb::Iterator> NewIterator(
      rocksdb::ColumnFamilyHandle* cf) = 0;
};

class SnapshotReader final : public KvReader {
 public:
  explicit SnapshotReader(rocksdb::DB* db)
      : db_(db), snapshot_(db->GetSnapshot()) {
    options_.snapshot = snapshot_;
  }
  ~SnapshotReader() override { db_->ReleaseSnapshot(snapshot_); }

  absl::StatusOr<std::string> Get(rocksdb::ColumnFamilyHandle* cf,
                                  const std::string& key) override {
    std::string value;
    rocksdb::Status s = db_->Get(options_, cf, key, &value);
    if (s.IsNotFound()) return absl::NotFoundError("");
    if (!s.ok()) return FromRocks(s, "get");
    return value;
  }
  std::unique_ptr<rocksdb::Iterator> NewIterator(
      rocksdb::ColumnFamilyHandle* cf) override {
    return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(options_, cf));
  }

 private:
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snapshot_;
  rocksdb::ReadOptions options_;
};

class BatchReader final : public KvReader {
 public:
  BatchReader(rocksdb::DB* db, rocksdb::WriteBatchWithIndex* batch)
      : db_(db), batch_(batch) {}
  absl::StatusOr<std::string> Get(rocksdb::ColumnFamilyHandle* cf,
                                  const std::string& key) override {
    std::string value;
    rocksdb::Status s =
        batch_->GetFromBatchAndDB(db_, rocksdb::ReadOptions(), cf, key, &value);
    if (s.IsNotFound()) return absl::NotFoundError("");
    if (!s.ok()) return FromRocks(s, "get");
    return value;
  }
  std::unique_ptr<rocksdb::Iterator> NewIterator(
      rocksdb::ColumnFamilyHandle* cf) override {
    return std::unique_ptr<rocksdb::Iterator>(batch_->NewIteratorWithBase(
        cf, db_->NewIterator(rocksdb::ReadOptions(), cf)));
  }

 private:
  rocksdb::DB* db_;
  rocksdb::WriteBatchWithIndex* batch_;
};

struct Families {
  rocksdb::ColumnFamilyHandle* history;
  rocksdb::ColumnFamilyHandle* index;
  rocksdb::ColumnFamilyHandle* latest;
  rocksdb::ColumnFamilyHandle* lease;
};

// Collects a range scan: counts every live key, keeps at most `limit`
// values (0: all) unless only counting.
struct RangeSink {
  int64_t limit = 0;
  bool count_only = false;
  int64_t count = 0;
  std::vector<mvccpb::KeyValue> kvs;
  bool WantsValue() const {
    return !count_only &&
           (limit == 0 || static_cast<int64_t>(kvs.size()) < limit);
  }
};

bool IsFromKey(const std::string& range_end) {
  return range_end.size() == 1 && range_end[0] == '\0';
}

// Visits keys live at `rev` in [key, range_end) (etcd's range rules: empty
// range_end is the key alone, "\0" is every key >= key).
absl::Status ScanRange(const Families& f, KvReader& reader,
                       const std::string& key, const std::string& range_end,
                       int64_t rev, bool at_current, RangeSink* sink) {
  const bool single = range_end.empty();
  const bool from_key = IsFromKey(range_end);
  auto in_range = [&](absl::string_view k) {
    if (single) return k == key;
    return from_key || k < absl::string_view(range_end);
  };
  auto corrupt = [](absl::string_view what) {
    return absl::InternalError(absl::StrCat("corrupt store: ", what));
  };

  if (at_current) {
    if (single) {
      absl::StatusOr<std::string> v = reader.Get(f.latest, key);
      if (absl::IsNotFound(v.status())) return absl::OkStatus();
      if (!v.ok()) return v.status();
      ++sink->count;
      if (sink->WantsValue()) {
        sink->kvs.emplace_back();
        if (!ParseKv(*v, &sink->kvs.back())) return corrupt("latest value");
      }
      return absl::OkStatus();
    }
    if (!from_key && range_end <= key) return absl::OkStatus();
    std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(f.latest);
    for (it->Seek(key); it->Valid() && in_range(View(it->key())); it->Next()) {
      ++sink->count;
      if (sink->WantsValue()) {
        sink->kvs.emplace_back();
        if (!ParseKv(View(it->value()), &sink->kvs.back())) {
          return corrupt("latest value");
        }
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "scan");
    return absl::OkStatus();
  }

  if (!single && !from_key && range_end <= key) return absl::OkStatus();
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(f.index);
  it->Seek(IndexKeyLowerBound(key));
  std::string k;
  Revision r;
  while (it->Valid()) {
    if (!DecodeIndexKey(View(it->key()), &k, &r)) return corrupt("index key");
    if (!in_range(k)) break;
    if (r.main > rev) {
      // The newest entry of k at or below rev, if any.
      it->Seek(EncodeIndexKey(
          k, Revision{rev, std::numeric_limits<int64_t>::max()}));
      if (!it->Valid()) break;
      std::string k2;
      if (!DecodeIndexKey(View(it->key()), &k2, &r)) {
        return corrupt("index key");
      }
      if (k2 != k) continue;  // k did not exist at rev; look at k2
    }
    absl::string_view flag = View(it->value());
    if (flag.size() != 1) return corrupt("index value");
    if (flag[0] == kPutFlag) {
      ++sink->count;
      if (sink->WantsValue()) {
        absl::StatusOr<std::string> v =
            reader.Get(f.history, EncodeRevision(r));
        if (!v.ok()) return corrupt("index entry without history");
        sink->kvs.emplace_back();
        if (v->empty() ||
            !ParseKv(absl::string_view(*v).substr(1), &sink->kvs.back())) {
          return corrupt("history value");
        }
      }
    }
    it->Seek(IndexKeyUpperBound(k));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return absl::OkStatus();
}

// The current and compact revisions as of the reader's snapshot, so that
// they agree with the data read through it.
void ReadRevisions(KvReader& reader, rocksdb::ColumnFamilyHandle* meta,
                   uint64_t* current, uint64_t* compacted) {
  for (auto [key, out] :
       {std::pair<const char*, uint64_t*>{kMetaRevision, current},
        {kMetaCompactRevision, compacted}}) {
    absl::StatusOr<std::string> v = reader.Get(meta, key);
    if (v.ok() && v->size() == 8) *out = ReadBigEndian64(*v);
  }
}

template <typename Key>
void StableSortBy(std::vector<mvccpb::KeyValue>& kvs, bool descend, Key key) {
  std::stable_sort(kvs.begin(), kvs.end(),
                   [&](const mvccpb::KeyValue& a, const mvccpb::KeyValue& b) {
                     return descend ? key(b) < key(a) : key(a) < key(b);
                   });
}

// etcd's Range: fetch, filter by revisions, sort, then limit.
absl::Status DoRange(const Families& f, KvReader& reader, int64_t current,
                     int64_t compacted, const etcdserverpb::RangeRequest& req,
                     etcdserverpb::RangeResponse* resp) {
  using etcdserverpb::RangeRequest;
  int64_t rev = req.revision() <= 0 ? current : req.revision();
  if (rev > current) return ErrFutureRev();
  if (rev < compacted) return ErrCompacted();

  const bool post_process =
      req.sort_order() != RangeRequest::NONE || req.min_mod_revision() != 0 ||
      req.max_mod_revision() != 0 || req.min_create_revision() != 0 ||
      req.max_create_revision() != 0;
  RangeSink sink;
  sink.count_only = req.count_only();
  // One more than asked, to tell whether there is more.
  sink.limit = (post_process || req.limit() <= 0) ? 0 : req.limit() + 1;
  if (absl::Status s = ScanRange(f, reader, req.key(), req.range_end(), rev,
                                 rev == current, &sink);
      !s.ok()) {
    return s;
  }
  std::vector<mvccpb::KeyValue>& kvs = sink.kvs;
  auto prune = [&kvs](auto drop) {
    kvs.erase(std::remove_if(kvs.begin(), kvs.end(), drop), kvs.end());
  };
  if (req.max_mod_revision() != 0) {
    prune([&](const mvccpb::KeyValue& kv) {
      return kv.mod_revision() > req.max_mod_revision();
    });
  }
  if (req.min_mod_revision() != 0) {
    prune([&](const mvccpb::KeyValue& kv) {
      return kv.mod_revision() < req.min_mod_revision();
    });
  }
  if (req.max_create_revision() != 0) {
    prune([&](const mvccpb::KeyValue& kv) {
      return kv.create_revision() > req.max_create_revision();
    });
  }
  if (req.min_create_revision() != 0) {
    prune([&](const mvccpb::KeyValue& kv) {
      return kv.create_revision() < req.min_create_revision();
    });
  }

  RangeRequest::SortOrder order = req.sort_order();
  // Results come in key order; other targets sort ascending by default.
  if (req.sort_target() != RangeRequest::KEY && order == RangeRequest::NONE) {
    order = RangeRequest::ASCEND;
  }
  if (order != RangeRequest::NONE) {
    bool descend = order == RangeRequest::DESCEND;
    switch (req.sort_target()) {
      case RangeRequest::VERSION:
        StableSortBy(kvs, descend, [](auto& kv) { return kv.version(); });
        break;
      case RangeRequest::CREATE:
        StableSortBy(kvs, descend,
                     [](auto& kv) { return kv.create_revision(); });
        break;
      case RangeRequest::MOD:
        StableSortBy(kvs, descend, [](auto& kv) { return kv.mod_revision(); });
        break;
      case RangeRequest::VALUE:
        StableSortBy(kvs, descend,
                     [](auto& kv) -> const std::string& { return kv.value(); });
        break;
      default:
        StableSortBy(kvs, descend,
                     [](auto& kv) -> const std::string& { return kv.key(); });
        break;
    }
  }
  if (req.limit() > 0 && static_cast<int64_t>(kvs.size()) > req.limit()) {
    kvs.resize(req.limit());
    resp->set_more(true);
  }
  resp->set_count(sink.count);
  for (mvccpb::KeyValue& kv : kvs) {
    if (req.keys_only()) kv.clear_value();
    *resp->add_kvs() = std::move(kv);
  }
  return absl::OkStatus();
}

bool CompareInts(int64_t a, int64_t b, etcdserverpb::Compare::CompareResult r) {
  switch (r) {
    case etcdserverpb::Compare::EQUAL:
      return a == b;
    case etcdserverpb::Compare::GREATER:
      return a > b;
    case etcdserverpb::Compare::LESS:
      return a < b;
    case etcdserverpb::Compare::NOT_EQUAL:
      return a != b;
    default:
      return false;
  }
}

bool CompareKv(const etcdserverpb::Compare& c, const mvccpb::KeyValue& kv) {
  using etcdserverpb::Compare;
  switch (c.target()) {
    case Compare::VALUE: {
      int cmp = kv.value().compare(c.value());
      return CompareInts(cmp < 0 ? -1 : (cmp > 0 ? 1 : 0), 0, c.result());
    }
    case Compare::VERSION:
      return CompareInts(kv.version(), c.version(), c.result());
    case Compare::CREATE:
      return CompareInts(kv.create_revision(), c.create_revision(), c.result());
    case Compare::MOD:
      return CompareInts(kv.mod_revision(), c.mod_revision(), c.result());
    case Compare::LEASE:
      return CompareInts(kv.lease(), c.lease(), c.result());
    default:
      return false;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// MvccStore

absl::StatusOr<std::unique_ptr<MvccStore>> MvccStore::Open(
    const std::string& dir, const StoreOptions& options) {
  auto store = std::unique_ptr<MvccStore>(new MvccStore());
  store->options_ = options;
  store->cache_ = rocksdb::NewLRUCache(options.block_cache_bytes);
  store->write_buffers_ = std::make_shared<rocksdb::WriteBufferManager>(
      options.memtable_bytes, store->cache_);

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = store->cache_;
  table.cache_index_and_filter_blocks = true;
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf_options.write_buffer_size = options.memtable_bytes / 4;
  cf_options.max_write_buffer_number = 2;
  // Memtables grow in arena blocks; small ones keep a small store small
  // (in memory and in the size the space quota measures).
  cf_options.arena_block_size = 64 << 10;

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.write_buffer_manager = store->write_buffers_;
  db_options.max_open_files = 256;
  db_options.keep_log_file_num = 4;
  db_options.max_background_jobs = 2;

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {"meta", cf_options},
      {"history", cf_options},
      {"index", cf_options},
      {"latest", cf_options},
      {"lease", cf_options},
  };
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, families,
                                        &store->handles_, &store->db_);
  if (!s.ok()) return FromRocks(s, "open " + dir);
  store->meta_cf_ = store->handles_[1];
  store->history_cf_ = store->handles_[2];
  store->index_cf_ = store->handles_[3];
  store->latest_cf_ = store->handles_[4];
  store->lease_cf_ = store->handles_[5];

  auto read_u64 = [&](const char* key, uint64_t* out) -> absl::Status {
    std::string v;
    rocksdb::Status rs =
        store->db_->Get(rocksdb::ReadOptions(), store->meta_cf_, key, &v);
    if (rs.IsNotFound()) {
      *out = 0;
      return absl::OkStatus();
    }
    if (!rs.ok()) return FromRocks(rs, "read meta");
    if (v.size() != 8) {
      return absl::InternalError(absl::StrCat("corrupt store: meta ", key));
    }
    *out = ReadBigEndian64(v);
    return absl::OkStatus();
  };
  std::string format;
  s = store->db_->Get(rocksdb::ReadOptions(), store->meta_cf_, kMetaFormat,
                      &format);
  if (s.IsNotFound()) {
    s = store->db_->Put(rocksdb::WriteOptions(), store->meta_cf_, kMetaFormat,
                        kFormatVersion);
    if (!s.ok()) return FromRocks(s, "write meta");
  } else if (!s.ok()) {
    return FromRocks(s, "read meta");
  } else if (format != kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("the key-value store in ", dir, " has format version ",
                     format, ", which this lockd (format ", kFormatVersion,
                     ") cannot read: run a lockd release that supports it"));
  }
  uint64_t applied, rev, compact;
  for (auto [key, out] :
       {std::pair<const char*, uint64_t*>{kMetaAppliedIndex, &applied},
        {kMetaRevision, &rev},
        {kMetaCompactRevision, &compact}}) {
    if (absl::Status st = read_u64(key, out); !st.ok()) return st;
  }
  std::string alarm_bytes;
  s = store->db_->Get(rocksdb::ReadOptions(), store->meta_cf_, kMetaAlarms,
                      &alarm_bytes);
  if (s.ok()) {
    etcdserverpb::AlarmResponse alarms;
    if (!alarms.ParseFromString(alarm_bytes)) {
      return absl::InternalError("corrupt store: meta alarms");
    }
    absl::MutexLock lock(&store->alarms_mu_);
    store->alarms_.assign(alarms.alarms().begin(), alarms.alarms().end());
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read meta");
  }
  store->applied_index_ = applied;
  // As in etcd, an empty store is at revision 1; the first write makes 2.
  store->revision_ = rev == 0 ? 1 : static_cast<int64_t>(rev);
  store->compact_revision_ = static_cast<int64_t>(compact);
  return store;
}

MvccStore::~MvccStore() {
  if (db_ == nullptr) return;
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    db_->DestroyColumnFamilyHandle(h);
  }
  delete db_;
}

absl::Status MvccStore::Range(const etcdserverpb::RangeRequest& req,
                              etcdserverpb::RangeResponse* resp) const {
  SnapshotReader reader(db_);
  // The revision and the data come from the same snapshot.
  uint64_t current = 1, compacted = 0;
  ReadRevisions(reader, meta_cf_, &current, &compacted);
  Families f{history_cf_, index_cf_, latest_cf_, lease_cf_};
  absl::Status s = DoRange(f, reader, static_cast<int64_t>(current),
                           static_cast<int64_t>(compacted), req, resp);
  if (s.ok()) resp->mutable_header()->set_revision(current);
  return s;
}

absl::Status MvccStore::History(int64_t from_revision, size_t max_events,
                                std::vector<mvccpb::Event>* events,
                                int64_t* next_revision,
                                size_t max_bytes) const {
  SnapshotReader reader(db_);
  if (from_revision < compact_revision()) return ErrCompacted();
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(history_cf_);
  int64_t last_main = 0;
  size_t bytes = 0;
  *next_revision = from_revision;
  for (it->Seek(EncodeRevision(Revision{from_revision, 0})); it->Valid();
       it->Next()) {
    Revision r = DecodeRevision(View(it->key()));
    if ((events->size() >= max_events || bytes >= max_bytes) &&
        r.main != last_main) {
      break;
    }
    absl::string_view v = View(it->value());
    bytes += v.size();
    mvccpb::Event ev;
    if (v.empty() || !ParseKv(v.substr(1), ev.mutable_kv())) {
      return absl::InternalError("corrupt store: history value");
    }
    ev.set_type(v[0] == kTombstoneFlag ? mvccpb::Event::DELETE
                                       : mvccpb::Event::PUT);
    events->push_back(std::move(ev));
    last_main = r.main;
    *next_revision = r.main + 1;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "history");
  return absl::OkStatus();
}

absl::StatusOr<mvccpb::KeyValue> MvccStore::GetAt(const std::string& key,
                                                  int64_t revision) const {
  SnapshotReader reader(db_);
  Families f{history_cf_, index_cf_, latest_cf_, lease_cf_};
  RangeSink sink;
  if (absl::Status s = ScanRange(f, reader, key, "", revision, false, &sink);
      !s.ok()) {
    return s;
  }
  if (sink.kvs.empty()) return absl::NotFoundError("no such key at revision");
  return std::move(sink.kvs[0]);
}

absl::StatusOr<MvccStore::HashResult> MvccStore::HashKV(
    int64_t revision) const {
  SnapshotReader reader(db_);
  uint64_t current = 1, compacted = 0;
  ReadRevisions(reader, meta_cf_, &current, &compacted);
  HashResult result;
  result.revision = revision <= 0 ? static_cast<int64_t>(current) : revision;
  result.compact_revision = static_cast<int64_t>(compacted);
  if (result.revision > static_cast<int64_t>(current)) return ErrFutureRev();
  if (result.revision < result.compact_revision) return ErrCompacted();
  uLong crc = crc32(0L, Z_NULL, 0);
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(history_cf_);
  for (it->Seek(EncodeRevision(Revision{result.compact_revision + 1, 0}));
       it->Valid(); it->Next()) {
    if (DecodeRevision(View(it->key())).main > result.revision) break;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(it->key().data()),
                static_cast<uInt>(it->key().size()));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(it->value().data()),
                static_cast<uInt>(it->value().size()));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "hash");
  result.hash = static_cast<uint32_t>(crc);
  return result;
}

absl::Status MvccStore::Checkpoint(const std::string& dir) const {
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_, &raw);
  if (!s.ok()) return FromRocks(s, "checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  s = checkpoint->CreateCheckpoint(dir);
  if (!s.ok()) return FromRocks(s, "checkpoint " + dir);
  return absl::OkStatus();
}

absl::Status MvccStore::Defragment() {
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction =
      rocksdb::BottommostLevelCompaction::kForce;
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    rocksdb::Status s = db_->CompactRange(options, h, nullptr, nullptr);
    if (!s.ok()) return FromRocks(s, "defragment");
  }
  return absl::OkStatus();
}

absl::Status MvccStore::LeaseKeys(int64_t lease_id,
                                  std::vector<std::string>* keys) const {
  SnapshotReader reader(db_);
  std::string prefix = U64(static_cast<uint64_t>(lease_id));
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(lease_cf_);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
       it->Next()) {
    keys->emplace_back(it->key().data() + 8, it->key().size() - 8);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "lease keys");
  return absl::OkStatus();
}

std::vector<etcdserverpb::AlarmMember> MvccStore::Alarms() const {
  absl::MutexLock lock(&alarms_mu_);
  return alarms_;
}

std::unique_ptr<ApplyBatch> MvccStore::BeginApply(const LeaseOracle* leases) {
  bool was_open = batch_open_.exchange(true);
  if (was_open) {
    std::fprintf(stderr, "MvccStore: two ApplyBatches open at once\n");
    std::abort();
  }
  return std::unique_ptr<ApplyBatch>(new ApplyBatch(this, leases));
}

absl::StatusOr<bool> MvccStore::CompactSome(size_t max_keys) {
  const int64_t target = compact_revision();
  std::string done_bytes;
  uint64_t done = 0;
  rocksdb::Status rs =
      db_->Get(rocksdb::ReadOptions(), meta_cf_, kMetaCompactDone, &done_bytes);
  if (rs.ok() && done_bytes.size() == 8) done = ReadBigEndian64(done_bytes);
  if (static_cast<int64_t>(done) >= target) return true;
  if (compact_cursor_revision_ != target) {
    compact_cursor_.clear();
    compact_cursor_revision_ = target;
  }

  rocksdb::WriteBatch batch;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), index_cf_));
  if (compact_cursor_.empty()) {
    it->SeekToFirst();
  } else {
    it->Seek(compact_cursor_);
  }
  size_t visited = 0;
  std::string current_key;
  bool kept_newest = false;  // for current_key: saw its newest entry <= target
  std::string k;
  Revision r;
  while (it->Valid()) {
    if (!DecodeIndexKey(View(it->key()), &k, &r)) {
      return absl::InternalError("corrupt store: index key");
    }
    if (k != current_key || visited == 0) {
      if (visited == max_keys) break;
      current_key = k;
      kept_newest = false;
      ++visited;
    }
    if (r.main <= target) {
      bool tombstone =
          it->value().size() == 1 && it->value()[0] == kTombstoneFlag;
      // Keep the newest entry at or below target, unless it is a tombstone
      // strictly below it (nothing can read it any more).
      bool keep = !kept_newest && !(tombstone && r.main < target);
      kept_newest = true;
      if (!keep) {
        batch.Delete(index_cf_, it->key());
        batch.Delete(history_cf_, EncodeRevision(r));
      }
    }
    it->Next();
  }
  if (!it->status().ok()) return FromRocks(it->status(), "compact scan");
  bool finished = !it->Valid();
  if (finished) {
    batch.Put(meta_cf_, kMetaCompactDone, U64(static_cast<uint64_t>(target)));
    compact_cursor_.clear();
  } else {
    compact_cursor_ = IndexKeyLowerBound(k);
  }
  rs = db_->Write(rocksdb::WriteOptions(), &batch);
  if (!rs.ok()) return FromRocks(rs, "compact write");
  return finished;
}

uint64_t MvccStore::ApproximateSizeBytes() const {
  // Files on disk plus what is still in memtables, over every column family.
  uint64_t total = 0;
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    uint64_t sst = 0, mem = 0;
    db_->GetIntProperty(h, rocksdb::DB::Properties::kTotalSstFilesSize, &sst);
    db_->GetIntProperty(h, rocksdb::DB::Properties::kCurSizeAllMemTables, &mem);
    total += sst + mem;
  }
  return total;
}

// ---------------------------------------------------------------------------
// ApplyBatch

struct ApplyBatch::Impl {
  Impl(rocksdb::DB* db)
      : batch(rocksdb::BytewiseComparator(), 0, /*overwrite_key=*/true),
        reader(db, &batch) {}
  rocksdb::WriteBatchWithIndex batch;
  BatchReader reader;
  const LeaseOracle* leases = nullptr;
  std::vector<mvccpb::Event> events;
  // Per request: whether it wrote, and the next sub revision.
  bool wrote = false;
  int64_t sub = 0;
  bool finished = false;
};

ApplyBatch::ApplyBatch(MvccStore* store, const LeaseOracle* leases)
    : store_(store),
      impl_(std::make_unique<Impl>(store->db_)),
      revision_(store->revision()),
      compact_revision_(store->compact_revision()),
      alarms_(store->Alarms()) {
  impl_->leases = leases;
}

ApplyBatch::~ApplyBatch() {
  if (!impl_->finished) store_->batch_open_ = false;
}

template <typename Fn>
absl::Status ApplyBatch::ApplyOne(Fn&& fn) {
  impl_->batch.SetSavePoint();
  const size_t events_before = impl_->events.size();
  const int64_t compact_before = compact_revision_;
  impl_->wrote = false;
  impl_->sub = 0;
  absl::Status s = fn();
  if (!s.ok()) {
    rocksdb::Status rs = impl_->batch.RollbackToSavePoint();
    if (!rs.ok()) {
      std::fprintf(stderr, "ApplyBatch: rollback failed: %s\n",
                   rs.ToString().c_str());
      std::abort();
    }
    impl_->events.resize(events_before);
    compact_revision_ = compact_before;
    impl_->wrote = false;
    return s;
  }
  impl_->batch.PopSavePoint();
  if (impl_->wrote) ++revision_;
  impl_->wrote = false;
  return s;
}

void ApplyBatch::WritePut(const mvccpb::KeyValue& kv,
                          const mvccpb::KeyValue* prev) {
  Revision rev{write_revision(), impl_->sub++};
  std::string bytes = kv.SerializeAsString();
  std::string history;
  history.reserve(bytes.size() + 1);
  history.push_back(kPutFlag);
  history.append(bytes);
  Families f{store_->history_cf_, store_->index_cf_, store_->latest_cf_,
             store_->lease_cf_};
  impl_->batch.Put(f.history, EncodeRevision(rev), history);
  impl_->batch.Put(f.index, EncodeIndexKey(kv.key(), rev),
                   std::string(1, kPutFlag));
  impl_->batch.Put(f.latest, kv.key(), bytes);
  if (prev != nullptr && prev->lease() != 0 && prev->lease() != kv.lease()) {
    impl_->batch.Delete(f.lease, LeaseKey(prev->lease(), kv.key()));
  }
  if (kv.lease() != 0) {
    impl_->batch.Put(f.lease, LeaseKey(kv.lease(), kv.key()), "");
  }
  mvccpb::Event ev;
  ev.set_type(mvccpb::Event::PUT);
  *ev.mutable_kv() = kv;
  if (prev != nullptr) *ev.mutable_prev_kv() = *prev;
  impl_->events.push_back(std::move(ev));
  impl_->wrote = true;
}

void ApplyBatch::WriteTombstone(const mvccpb::KeyValue& prev) {
  Revision rev{write_revision(), impl_->sub++};
  mvccpb::KeyValue tomb;
  tomb.set_key(prev.key());
  tomb.set_mod_revision(rev.main);
  std::string history(1, kTombstoneFlag);
  history.append(tomb.SerializeAsString());
  impl_->batch.Put(store_->history_cf_, EncodeRevision(rev), history);
  impl_->batch.Put(store_->index_cf_, EncodeIndexKey(prev.key(), rev),
                   std::string(1, kTombstoneFlag));
  impl_->batch.Delete(store_->latest_cf_, prev.key());
  if (prev.lease() != 0) {
    impl_->batch.Delete(store_->lease_cf_, LeaseKey(prev.lease(), prev.key()));
  }
  mvccpb::Event ev;
  ev.set_type(mvccpb::Event::DELETE);
  *ev.mutable_kv() = std::move(tomb);
  *ev.mutable_prev_kv() = prev;
  impl_->events.push_back(std::move(ev));
  impl_->wrote = true;
}

absl::Status ApplyBatch::RangeLocked(const etcdserverpb::RangeRequest& req,
                                     etcdserverpb::RangeResponse* resp) {
  // Inside a transaction that wrote, reads see its writes at its revision.
  int64_t current = impl_->wrote ? write_revision() : revision_;
  Families f{store_->history_cf_, store_->index_cf_, store_->latest_cf_,
             store_->lease_cf_};
  absl::Status s =
      DoRange(f, impl_->reader, current, compact_revision_, req, resp);
  if (s.ok()) resp->mutable_header()->set_revision(current);
  return s;
}

namespace {

bool NoSpace(const std::vector<etcdserverpb::AlarmMember>& alarms) {
  for (const auto& a : alarms) {
    if (a.alarm() == etcdserverpb::NOSPACE) return true;
  }
  return false;
}

// True when no branch of the txn (nested ones included) writes.
bool TxnReadOnly(const etcdserverpb::TxnRequest& t) {
  for (const auto* branch : {&t.success(), &t.failure()}) {
    for (const etcdserverpb::RequestOp& op : *branch) {
      if (op.has_request_put() || op.has_request_delete_range()) return false;
      if (op.has_request_txn() && !TxnReadOnly(op.request_txn())) return false;
    }
  }
  return true;
}

}  // namespace

absl::Status ApplyBatch::PutLocked(const etcdserverpb::PutRequest& req,
                                   etcdserverpb::PutResponse* resp) {
  if (req.key().empty()) return ErrEmptyKey();
  if (NoSpace(alarms_)) return ErrNoSpace();
  absl::StatusOr<std::string> prev_bytes =
      impl_->reader.Get(store_->latest_cf_, req.key());
  if (!prev_bytes.ok() && !absl::IsNotFound(prev_bytes.status())) {
    return prev_bytes.status();
  }
  mvccpb::KeyValue prev;
  const bool exists = prev_bytes.ok();
  if (exists && !ParseKv(*prev_bytes, &prev)) {
    return absl::InternalError("corrupt store: latest value");
  }
  if ((req.ignore_value() || req.ignore_lease()) && !exists) {
    return ErrKeyNotFound();
  }
  int64_t lease = req.ignore_lease() ? prev.lease() : req.lease();
  if (!req.ignore_lease() && lease != 0 &&
      (impl_->leases == nullptr || !impl_->leases->LeaseExists(lease))) {
    return ErrLeaseNotFound();
  }
  const int64_t main = write_revision();
  mvccpb::KeyValue kv;
  kv.set_key(req.key());
  kv.set_value(req.ignore_value() ? prev.value() : req.value());
  kv.set_create_revision(exists ? prev.create_revision() : main);
  kv.set_mod_revision(main);
  kv.set_version(exists ? prev.version() + 1 : 1);
  kv.set_lease(lease);
  WritePut(kv, exists ? &prev : nullptr);
  if (req.prev_kv() && exists) *resp->mutable_prev_kv() = std::move(prev);
  resp->mutable_header()->set_revision(main);
  return absl::OkStatus();
}

absl::Status ApplyBatch::DeleteRangeLocked(
    const etcdserverpb::DeleteRangeRequest& req,
    etcdserverpb::DeleteRangeResponse* resp) {
  if (req.key().empty()) return ErrEmptyKey();
  Families f{store_->history_cf_, store_->index_cf_, store_->latest_cf_,
             store_->lease_cf_};
  RangeSink sink;
  int64_t current = impl_->wrote ? write_revision() : revision_;
  if (absl::Status s = ScanRange(f, impl_->reader, req.key(), req.range_end(),
                                 current, true, &sink);
      !s.ok()) {
    return s;
  }
  for (const mvccpb::KeyValue& kv : sink.kvs) WriteTombstone(kv);
  resp->set_deleted(static_cast<int64_t>(sink.kvs.size()));
  if (req.prev_kv()) {
    for (mvccpb::KeyValue& kv : sink.kvs) *resp->add_prev_kvs() = std::move(kv);
  }
  resp->mutable_header()->set_revision(impl_->wrote ? write_revision()
                                                    : revision_);
  return absl::OkStatus();
}

absl::StatusOr<bool> ApplyBatch::EvaluateCompare(
    const etcdserverpb::Compare& cmp) {
  etcdserverpb::RangeRequest req;
  req.set_key(cmp.key());
  req.set_range_end(cmp.range_end());
  etcdserverpb::RangeResponse resp;
  if (absl::Status s = RangeLocked(req, &resp); !s.ok()) return s;
  if (resp.kvs_size() == 0) {
    // A missing key compares as all zeros, but never by value.
    if (cmp.target() == etcdserverpb::Compare::VALUE) return false;
    return CompareKv(cmp, mvccpb::KeyValue());
  }
  for (const mvccpb::KeyValue& kv : resp.kvs()) {
    if (!CompareKv(cmp, kv)) return false;
  }
  return true;
}

absl::Status ApplyBatch::TxnLocked(const etcdserverpb::TxnRequest& req,
                                   etcdserverpb::TxnResponse* resp) {
  bool succeeded = true;
  for (const etcdserverpb::Compare& cmp : req.compare()) {
    absl::StatusOr<bool> ok = EvaluateCompare(cmp);
    if (!ok.ok()) return ok.status();
    if (!*ok) {
      succeeded = false;
      break;
    }
  }
  resp->set_succeeded(succeeded);
  const auto& ops = succeeded ? req.success() : req.failure();
  for (const etcdserverpb::RequestOp& op : ops) {
    etcdserverpb::ResponseOp* out = resp->add_responses();
    absl::Status s;
    switch (op.request_case()) {
      case etcdserverpb::RequestOp::kRequestRange:
        s = RangeLocked(op.request_range(), out->mutable_response_range());
        break;
      case etcdserverpb::RequestOp::kRequestPut:
        s = PutLocked(op.request_put(), out->mutable_response_put());
        break;
      case etcdserverpb::RequestOp::kRequestDeleteRange:
        s = DeleteRangeLocked(op.request_delete_range(),
                              out->mutable_response_delete_range());
        break;
      case etcdserverpb::RequestOp::kRequestTxn:
        s = TxnLocked(op.request_txn(), out->mutable_response_txn());
        break;
      default:
        s = absl::InvalidArgumentError("etcdserver: empty request in txn");
        break;
    }
    if (!s.ok()) return s;
  }
  resp->mutable_header()->set_revision(impl_->wrote ? write_revision()
                                                    : revision_);
  return absl::OkStatus();
}

absl::Status ApplyBatch::Put(const etcdserverpb::PutRequest& req,
                             etcdserverpb::PutResponse* resp) {
  return ApplyOne([&] { return PutLocked(req, resp); });
}

absl::Status ApplyBatch::DeleteRange(
    const etcdserverpb::DeleteRangeRequest& req,
    etcdserverpb::DeleteRangeResponse* resp) {
  return ApplyOne([&] { return DeleteRangeLocked(req, resp); });
}

absl::Status ApplyBatch::Txn(const etcdserverpb::TxnRequest& req,
                             etcdserverpb::TxnResponse* resp) {
  if (NoSpace(alarms_) && !TxnReadOnly(req)) return ErrNoSpace();
  return ApplyOne([&] { return TxnLocked(req, resp); });
}

absl::Status ApplyBatch::Alarm(const etcdserverpb::AlarmRequest& req,
                               etcdserverpb::AlarmResponse* resp) {
  auto match = [&](const etcdserverpb::AlarmMember& a) {
    return a.memberid() == req.memberid() && a.alarm() == req.alarm();
  };
  switch (req.action()) {
    case etcdserverpb::AlarmRequest::GET:
      break;
    case etcdserverpb::AlarmRequest::ACTIVATE:
      if (req.alarm() == etcdserverpb::NONE) {
        return absl::InvalidArgumentError("etcdserver: no alarm given");
      }
      if (std::none_of(alarms_.begin(), alarms_.end(), match)) {
        etcdserverpb::AlarmMember a;
        a.set_memberid(req.memberid());
        a.set_alarm(req.alarm());
        alarms_.push_back(a);
        alarms_changed_ = true;
      }
      break;
    case etcdserverpb::AlarmRequest::DEACTIVATE: {
      auto it = std::remove_if(alarms_.begin(), alarms_.end(), [&](auto& a) {
        // Disarming with NONE clears the member's alarms of every kind.
        return a.memberid() == req.memberid() &&
               (req.alarm() == etcdserverpb::NONE || a.alarm() == req.alarm());
      });
      if (it != alarms_.end()) {
        alarms_.erase(it, alarms_.end());
        alarms_changed_ = true;
      }
      break;
    }
    default:
      return absl::InvalidArgumentError("etcdserver: unknown alarm action");
  }
  for (const auto& a : alarms_) {
    if (req.action() == etcdserverpb::AlarmRequest::GET &&
        (req.memberid() != 0 && a.memberid() != req.memberid())) {
      continue;
    }
    *resp->add_alarms() = a;
  }
  resp->mutable_header()->set_revision(revision_);
  return absl::OkStatus();
}

absl::Status ApplyBatch::Range(const etcdserverpb::RangeRequest& req,
                               etcdserverpb::RangeResponse* resp) {
  return RangeLocked(req, resp);
}

absl::Status ApplyBatch::Compact(const etcdserverpb::CompactionRequest& req,
                                 etcdserverpb::CompactionResponse* resp) {
  return ApplyOne([&]() -> absl::Status {
    if (req.revision() <= compact_revision_) return ErrCompacted();
    if (req.revision() > revision_) return ErrFutureRev();
    compact_revision_ = req.revision();
    resp->mutable_header()->set_revision(revision_);
    return absl::OkStatus();
  });
}

absl::StatusOr<int64_t> ApplyBatch::DeleteLeaseKeys(int64_t lease_id) {
  int64_t deleted = 0;
  absl::Status s = ApplyOne([&]() -> absl::Status {
    std::string prefix = U64(static_cast<uint64_t>(lease_id));
    std::vector<std::string> keys;
    {
      std::unique_ptr<rocksdb::Iterator> it =
          impl_->reader.NewIterator(store_->lease_cf_);
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
           it->Next()) {
        keys.emplace_back(it->key().data() + 8, it->key().size() - 8);
      }
      if (!it->status().ok()) return FromRocks(it->status(), "lease keys");
    }
    for (const std::string& key : keys) {
      absl::StatusOr<std::string> bytes =
          impl_->reader.Get(store_->latest_cf_, key);
      if (!bytes.ok()) return absl::InternalError("corrupt store: lease key");
      mvccpb::KeyValue kv;
      if (!ParseKv(*bytes, &kv)) {
        return absl::InternalError("corrupt store: latest value");
      }
      WriteTombstone(kv);
      ++deleted;
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return deleted;
}

std::vector<mvccpb::Event> ApplyBatch::TakeEvents() {
  std::vector<mvccpb::Event> out;
  out.swap(impl_->events);
  return out;
}

absl::Status ApplyBatch::Commit(uint64_t applied_index) {
  if (impl_->finished) {
    std::fprintf(stderr, "ApplyBatch: Commit called twice\n");
    std::abort();
  }
  impl_->finished = true;
  rocksdb::WriteBatchWithIndex& b = impl_->batch;
  b.Put(store_->meta_cf_, kMetaAppliedIndex, U64(applied_index));
  b.Put(store_->meta_cf_, kMetaRevision, U64(static_cast<uint64_t>(revision_)));
  b.Put(store_->meta_cf_, kMetaCompactRevision,
        U64(static_cast<uint64_t>(compact_revision_)));
  if (alarms_changed_) {
    etcdserverpb::AlarmResponse alarms;
    for (const auto& a : alarms_) *alarms.add_alarms() = a;
    b.Put(store_->meta_cf_, kMetaAlarms, alarms.SerializeAsString());
  }
  rocksdb::WriteOptions wo;
  wo.sync = store_->options_.sync;
  rocksdb::Status s = store_->db_->Write(wo, b.GetWriteBatch());
  // Committed (or failed for good): the store takes the next batch now.
  store_->batch_open_ = false;
  if (!s.ok()) return FromRocks(s, "apply write");
  store_->revision_ = revision_;
  store_->compact_revision_ = compact_revision_;
  if (alarms_changed_) {
    absl::MutexLock lock(&store_->alarms_mu_);
    store_->alarms_ = alarms_;
  }
  store_->applied_index_ = applied_index;
  return absl::OkStatus();
}

}  // namespace lockd::kv
