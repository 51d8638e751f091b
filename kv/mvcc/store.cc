// On-disk format (format version 1), one RocksDB database with these column
// families. Integers are big-endian; "key" is a user key.
//
//   meta     "format"           -> "1"
//            "applied_index"    -> u64: raft index of the last applied entry
//            "revision"         -> u64: current main revision
//            "compact_revision" -> u64: revisions below it are unreadable
//            "compact_done"     -> u64: history below it is physically gone
//            "alarms"           -> etcdserverpb.AlarmResponse (alarms only)
//            "record/" name     -> bytes of a layer above (PutRecord)
//            "lease/" id:u64    -> the lessor's opaque record of a lease
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

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "kv/mvcc/errors.h"
#include "kv/snapshot/archive.h"
#include "lockd/util/clock.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/slice.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/utilities/write_batch_with_index.h"
#include "rocksdb/write_buffer_manager.h"

namespace lockd::kv {
namespace {

void Count(metrics::Counter* counter) {
  if (counter != nullptr) counter->Inc();
}

// The operations a transaction ran, its nested transactions' included.
int TxnOps(const etcdserverpb::TxnResponse& resp) {
  int n = 0;
  for (const etcdserverpb::ResponseOp& op : resp.responses()) {
    n += op.has_response_txn() ? TxnOps(op.response_txn()) : 1;
  }
  return n;
}

constexpr char kFormatVersion[] = "1";
constexpr char kMetaFormat[] = "format";
constexpr char kMetaAppliedIndex[] = "applied_index";
constexpr char kMetaRevision[] = "revision";
constexpr char kMetaCompactRevision[] = "compact_revision";
constexpr char kMetaCompactDone[] = "compact_done";
constexpr char kMetaAlarms[] = "alarms";
constexpr char kMetaRecordPrefix[] = "record/";
constexpr char kMetaLeasePrefix[] = "lease/";

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
  uint64_t sequence() const { return snapshot_->GetSequenceNumber(); }

 private:
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snapshot_;
  rocksdb::ReadOptions options_;
};

// A batch's writes, and reads that see them. Writes go to a plain
// WriteBatch. The read nearly every write makes, a put's lookup of its key's
// live version, is answered from a map of the batch's writes to `latest`.
// Reads that need order (ranges, scans) or another family use an indexed
// copy of the batch (WriteBatchWithIndex), built on first need by replaying
// the batch and kept up to date from then on: keeping that index for every
// write cost more than inserting the writes into the memtables.
class PendingBatch final : public KvReader {
 public:
  PendingBatch(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* latest,
               const std::vector<rocksdb::ColumnFamilyHandle*>& families)
      : db_(db), latest_(latest), families_(families) {}

  void Put(rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice& key,
           const rocksdb::Slice& value) {
    batch_.Put(cf, key, value);
    if (indexed_ != nullptr) indexed_->Put(cf, key, value);
    if (cf == latest_) Remember(key, value.ToString());
  }
  void Delete(rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice& key) {
    batch_.Delete(cf, key);
    if (indexed_ != nullptr) indexed_->Delete(cf, key);
    if (cf == latest_) Remember(key, std::nullopt);
  }

  // One save point at a time (one request of the batch).
  void SetSavePoint() {
    if (saving_) Fail("nested save point");
    batch_.SetSavePoint();
    saving_ = true;
  }
  void RollbackToSavePoint() {
    if (!saving_) Fail("rollback without a save point");
    rocksdb::Status s = batch_.RollbackToSavePoint();
    if (!s.ok()) Fail(s.ToString());
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
      if (it->second.has_value()) {
        latest_writes_[it->first] = std::move(*it->second);
      } else {
        latest_writes_.erase(it->first);
      }
    }
    undo_.clear();
    saving_ = false;
    // Rebuilt from the batch when next needed.
    indexed_.reset();
  }
  void PopSavePoint() {
    if (!saving_) Fail("pop without a save point");
    rocksdb::Status s = batch_.PopSavePoint();
    if (!s.ok()) Fail(s.ToString());
    undo_.clear();
    saving_ = false;
  }

  // Everything written, for the commit.
  rocksdb::WriteBatch* writes() { return &batch_; }

  absl::StatusOr<std::string> Get(rocksdb::ColumnFamilyHandle* cf,
                                  const std::string& key) override {
    std::string value;
    rocksdb::Status s;
    if (cf == latest_) {
      auto it = latest_writes_.find(key);
      if (it != latest_writes_.end()) {
        if (!it->second.has_value()) return absl::NotFoundError("");
        return *it->second;
      }
      s = db_->Get(rocksdb::ReadOptions(), cf, key, &value);
    } else if (batch_.Count() == 0) {
      s = db_->Get(rocksdb::ReadOptions(), cf, key, &value);
    } else {
      s = Indexed()->GetFromBatchAndDB(db_, rocksdb::ReadOptions(), cf, key,
                                       &value);
    }
    if (s.IsNotFound()) return absl::NotFoundError("");
    if (!s.ok()) return FromRocks(s, "get");
    return value;
  }
  std::unique_ptr<rocksdb::Iterator> NewIterator(
      rocksdb::ColumnFamilyHandle* cf) override {
    rocksdb::Iterator* base = db_->NewIterator(rocksdb::ReadOptions(), cf);
    if (batch_.Count() == 0) return std::unique_ptr<rocksdb::Iterator>(base);
    return std::unique_ptr<rocksdb::Iterator>(
        Indexed()->NewIteratorWithBase(cf, base));
  }

 private:
  // Copies the batch's writes into an index (see the class comment).
  class Replay final : public rocksdb::WriteBatch::Handler {
   public:
    Replay(const std::vector<rocksdb::ColumnFamilyHandle*>& families,
           rocksdb::WriteBatchWithIndex* out)
        : families_(families), out_(out) {}
    rocksdb::Status PutCF(uint32_t id, const rocksdb::Slice& key,
                          const rocksdb::Slice& value) override {
      rocksdb::ColumnFamilyHandle* cf = Family(id);
      if (cf == nullptr) return rocksdb::Status::Corruption("family", key);
      return out_->Put(cf, key, value);
    }
    rocksdb::Status DeleteCF(uint32_t id, const rocksdb::Slice& key) override {
      rocksdb::ColumnFamilyHandle* cf = Family(id);
      if (cf == nullptr) return rocksdb::Status::Corruption("family", key);
      return out_->Delete(cf, key);
    }

   private:
    rocksdb::ColumnFamilyHandle* Family(uint32_t id) const {
      for (rocksdb::ColumnFamilyHandle* h : families_) {
        if (h->GetID() == id) return h;
      }
      return nullptr;
    }
    const std::vector<rocksdb::ColumnFamilyHandle*>& families_;
    rocksdb::WriteBatchWithIndex* out_;
  };

  rocksdb::WriteBatchWithIndex* Indexed() {
    if (indexed_ == nullptr) {
      indexed_ = std::make_unique<rocksdb::WriteBatchWithIndex>(
          rocksdb::BytewiseComparator(), 0, /*overwrite_key=*/true);
      Replay replay(families_, indexed_.get());
      rocksdb::Status s = batch_.Iterate(&replay);
      if (!s.ok()) Fail("index the batch: " + s.ToString());
    }
    return indexed_.get();
  }

  void Remember(const rocksdb::Slice& key, std::optional<std::string> value) {
    std::string k = key.ToString();
    auto it = latest_writes_.find(k);
    if (saving_) {
      undo_.emplace_back(
          k, it == latest_writes_.end()
                 ? std::nullopt
                 : std::optional<std::optional<std::string>>(it->second));
    }
    if (it == latest_writes_.end()) {
      latest_writes_.emplace(std::move(k), std::move(value));
    } else {
      it->second = std::move(value);
    }
  }

  [[noreturn]] static void Fail(const std::string& what) {
    std::fprintf(stderr, "ApplyBatch: %s\n", what.c_str());
    std::abort();
  }

  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* latest_;
  const std::vector<rocksdb::ColumnFamilyHandle*>& families_;
  rocksdb::WriteBatch batch_;
  // The batch's writes to `latest`: the value, or nullopt for a delete.
  absl::flat_hash_map<std::string, std::optional<std::string>> latest_writes_;
  // While a save point is set: each write's key and what the map held for
  // it before (nullopt: nothing).
  bool saving_ = false;
  std::vector<std::pair<std::string, std::optional<std::optional<std::string>>>>
      undo_;
  std::unique_ptr<rocksdb::WriteBatchWithIndex> indexed_;
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

// `latest` may have options of its own (it is the one family every put
// reads).
std::vector<rocksdb::ColumnFamilyDescriptor> ColumnFamilies(
    const rocksdb::ColumnFamilyOptions& cf_options,
    const rocksdb::ColumnFamilyOptions& latest_options) {
  return {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {"meta", cf_options},
      {"history", cf_options},
      {"index", cf_options},
      {"latest", latest_options},
      {"lease", cf_options},
  };
}

// Removes a directory tree (a RocksDB database). Missing is fine.
void RemoveTree(const std::string& path) {
  nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        remove(p);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

uint64_t NextDbId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

constexpr char kActiveFile[] = "ACTIVE";
constexpr char kGenerationPrefix[] = "db.";

std::string GenerationPath(const std::string& root, uint64_t generation) {
  return absl::StrCat(root, "/", kGenerationPrefix, generation);
}

// ReadActive's answer for a database directly in the root (a checkpoint
// opened in place, or a store written before generations existed).
constexpr uint64_t kInPlace = std::numeric_limits<uint64_t>::max();

// The generation ACTIVE names; 0 when there is no ACTIVE yet, kInPlace when
// there is none but a database lives in the root itself.
absl::StatusOr<uint64_t> ReadActive(const std::string& root) {
  const std::string path = root + "/" + kActiveFile;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      struct stat st;
      return stat((root + "/CURRENT").c_str(), &st) == 0 ? kInPlace : 0;
    }
    return absl::InternalError(
        absl::StrCat("open ", path, ": ", std::strerror(errno)));
  }
  char buf[64];
  ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  uint64_t generation = 0;
  absl::string_view text(buf, n > 0 ? static_cast<size_t>(n) : 0);
  if (!absl::ConsumePrefix(&text, kGenerationPrefix) ||
      !absl::ConsumeSuffix(&text, "\n") ||
      !absl::SimpleAtoi(text, &generation)) {
    return absl::InternalError(absl::StrCat(
        "corrupt store: ", path, " does not name a database generation"));
  }
  return generation;
}

// Points ACTIVE at `generation`, atomically and durably.
absl::Status WriteActive(const std::string& root, uint64_t generation) {
  const std::string path = root + "/" + kActiveFile;
  const std::string tmp = path + ".tmp";
  const std::string text = absl::StrCat(kGenerationPrefix, generation, "\n");
  int fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("create ", tmp, ": ", std::strerror(errno)));
  }
  bool ok = write(fd, text.data(), text.size()) ==
                static_cast<ssize_t>(text.size()) &&
            fsync(fd) == 0;
  int err = errno;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) err = errno;
    return absl::InternalError(
        absl::StrCat("write ", path, ": ", std::strerror(err)));
  }
  return SyncDir(root);
}

// Removes the files of a database that lives in the root itself, leaving
// the generation directories and ACTIVE.
void RemoveInPlaceFiles(const std::string& root) {
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return;
  std::vector<std::string> doomed;
  while (struct dirent* ent = readdir(d)) {
    const std::string name = ent->d_name;
    struct stat st;
    const std::string path = root + "/" + name;
    if (name != kActiveFile && lstat(path.c_str(), &st) == 0 &&
        S_ISREG(st.st_mode)) {
      doomed.push_back(path);
    }
  }
  closedir(d);
  for (const std::string& p : doomed) unlink(p.c_str());
}

// Removes every generation but `keep` (kInPlace: all of them) and, once
// ACTIVE exists, any in-place database files left in the root.
void RemoveOtherGenerations(const std::string& root, uint64_t keep) {
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return;
  std::vector<std::string> doomed;
  while (struct dirent* ent = readdir(d)) {
    absl::string_view name = ent->d_name;
    uint64_t g = 0;
    if (absl::ConsumePrefix(&name, kGenerationPrefix) &&
        absl::SimpleAtoi(name, &g) && g != keep) {
      doomed.push_back(root + "/" + ent->d_name);
    }
  }
  closedir(d);
  for (const std::string& p : doomed) RemoveTree(p);
  unlink((root + "/" + kActiveFile + ".tmp").c_str());
  // Only a root that ACTIVE marks as ours: never delete files in a
  // directory this store did not set up.
  struct stat st;
  if (keep != kInPlace && stat((root + "/" + kActiveFile).c_str(), &st) == 0) {
    RemoveInPlaceFiles(root);
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// MvccStore

struct MvccStore::Db {
  rocksdb::DB* db = nullptr;
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  rocksdb::ColumnFamilyHandle* history = nullptr;
  rocksdb::ColumnFamilyHandle* index = nullptr;
  rocksdb::ColumnFamilyHandle* latest = nullptr;
  rocksdb::ColumnFamilyHandle* lease = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::string path;
  // Unique per opened database in this process (never reused, unlike an
  // address).
  const uint64_t id = NextDbId();
  // Set once a Restore replaced this database: the last owner deletes it.
  std::atomic<bool> remove_on_close{false};
  // The database lives in the store's root (no generation directory).
  bool in_place = false;

  // The revisions the last apply commit wrote, and the sequence number the
  // database was at right after it. Only apply commits change them, so a
  // snapshot at exactly that sequence number has them without two reads of
  // `meta` (whose memtable holds a version of them per batch).
  absl::Mutex revisions_mu;
  uint64_t revisions_seq ABSL_GUARDED_BY(revisions_mu) = 0;  // 0: unknown
  uint64_t revisions_current ABSL_GUARDED_BY(revisions_mu) = 0;
  uint64_t revisions_compacted ABSL_GUARDED_BY(revisions_mu) = 0;

  void SetRevisions(uint64_t current, uint64_t compacted) {
    absl::MutexLock lock(&revisions_mu);
    revisions_seq = db->GetLatestSequenceNumber();
    revisions_current = current;
    revisions_compacted = compacted;
  }
  // The current and compact revisions as of `reader`'s snapshot.
  void Revisions(SnapshotReader& reader, uint64_t* current,
                 uint64_t* compacted) {
    {
      absl::MutexLock lock(&revisions_mu);
      if (revisions_seq != 0 && revisions_seq == reader.sequence()) {
        *current = revisions_current;
        *compacted = revisions_compacted;
        return;
      }
    }
    ReadRevisions(reader, meta, current, compacted);
  }

  ~Db() {
    if (db != nullptr) {
      for (rocksdb::ColumnFamilyHandle* h : handles) {
        db->DestroyColumnFamilyHandle(h);
      }
      delete db;
    }
    if (remove_on_close.load()) {
      if (in_place) {
        RemoveInPlaceFiles(path);
      } else {
        RemoveTree(path);
      }
    }
  }
};

absl::Status MvccStore::ReadMeta(rocksdb::DB* db,
                                 rocksdb::ColumnFamilyHandle* meta_cf,
                                 Meta* meta) {
  auto read_u64 = [&](const char* key, uint64_t* out) -> absl::Status {
    std::string v;
    rocksdb::Status rs = db->Get(rocksdb::ReadOptions(), meta_cf, key, &v);
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
  uint64_t applied, rev, compact;
  for (auto [key, out] :
       {std::pair<const char*, uint64_t*>{kMetaAppliedIndex, &applied},
        {kMetaRevision, &rev},
        {kMetaCompactRevision, &compact}}) {
    if (absl::Status st = read_u64(key, out); !st.ok()) return st;
  }
  std::string alarm_bytes;
  rocksdb::Status s =
      db->Get(rocksdb::ReadOptions(), meta_cf, kMetaAlarms, &alarm_bytes);
  if (s.ok()) {
    etcdserverpb::AlarmResponse alarms;
    if (!alarms.ParseFromString(alarm_bytes)) {
      return absl::InternalError("corrupt store: meta alarms");
    }
    meta->alarms.assign(alarms.alarms().begin(), alarms.alarms().end());
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read meta");
  }
  meta->applied = applied;
  // As in etcd, an empty store is at revision 1; the first write makes 2.
  meta->revision = rev == 0 ? 1 : static_cast<int64_t>(rev);
  meta->compact_revision = static_cast<int64_t>(compact);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<MvccStore::Db>> MvccStore::OpenDb(
    const std::string& path, Meta* meta) {
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache_;
  table.cache_index_and_filter_blocks = true;
  // Every put looks its key up in `latest`: a whole-key Bloom filter skips
  // the flushed files that do not hold the key, instead of reading (and
  // decompressing) a block of each.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // Every file's filter and index blocks stay in the cache. They are small
  // (about 1.5% of the data) but each lookup needs them, and the cache
  // cannot keep them otherwise: the memtables are charged to it (through
  // the write buffer manager) and can fill it, and then a lookup read and
  // decompressed a whole index block from the file each time (a put to a
  // store holding 200,000 keys on disk cost 224 us instead of 40).
  table.metadata_cache_options.unpartitioned_pinning =
      rocksdb::PinningTier::kAll;
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf_options.write_buffer_size = options_.memtable_bytes / 4;
  cf_options.max_write_buffer_number = 2;
  // Memtables grow in arena blocks; small ones keep a small store small
  // (in memory and in the size the space quota measures).
  cf_options.arena_block_size = 64 << 10;
  // Every put looks its key up in `latest`, most often a key that is not
  // in the memtables: a whole-key Bloom filter over each memtable (2% of
  // its size) answers that without searching the memtable's skip list.
  rocksdb::ColumnFamilyOptions latest_options = cf_options;
  latest_options.memtable_prefix_bloom_size_ratio = 0.02;
  latest_options.memtable_whole_key_filtering = true;

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.write_buffer_manager = write_buffers_;
  db_options.max_open_files = 256;
  db_options.keep_log_file_num = 4;
  db_options.max_background_jobs = 2;
  // The store's write-ahead log is written at every apply but synced only
  // when a memtable is flushed (RocksDB syncs the closed logs then, since
  // the families must agree after a crash): by then several megabytes were
  // waiting in the page cache, and writing them at once held up every
  // member's synced raft log append sharing the disk for 30-90 ms. Starting
  // the writeback of every 512 KiB as it is written keeps that sync small.
  db_options.wal_bytes_per_sync = 512 << 10;

  auto d = std::make_shared<Db>();
  d->path = path;
  rocksdb::Status s = rocksdb::DB::Open(
      db_options, path, ColumnFamilies(cf_options, latest_options), &d->handles,
      &d->db);
  if (!s.ok()) return FromRocks(s, "open " + path);
  d->meta = d->handles[1];
  d->history = d->handles[2];
  d->index = d->handles[3];
  d->latest = d->handles[4];
  d->lease = d->handles[5];

  std::string format;
  s = d->db->Get(rocksdb::ReadOptions(), d->meta, kMetaFormat, &format);
  if (s.IsNotFound()) {
    s = d->db->Put(rocksdb::WriteOptions(), d->meta, kMetaFormat,
                   kFormatVersion);
    if (!s.ok()) return FromRocks(s, "write meta");
  } else if (!s.ok()) {
    return FromRocks(s, "read meta");
  } else if (format != kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("the key-value store in ", path, " has format version ",
                     format, ", which this lockd (format ", kFormatVersion,
                     ") cannot read: run a lockd release that supports it"));
  }
  if (absl::Status st = ReadMeta(d->db, d->meta, meta); !st.ok()) return st;
  return d;
}

absl::StatusOr<std::unique_ptr<MvccStore>> MvccStore::Open(
    const std::string& dir, const StoreOptions& options) {
  auto store = std::unique_ptr<MvccStore>(new MvccStore());
  store->options_ = options;
  store->root_ = dir;
  store->cache_ = rocksdb::NewLRUCache(options.block_cache_bytes);
  store->write_buffers_ = std::make_shared<rocksdb::WriteBufferManager>(
      options.memtable_bytes, store->cache_);
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(
        absl::StrCat("create ", dir, ": ", std::strerror(errno)));
  }
  absl::StatusOr<uint64_t> generation = ReadActive(dir);
  if (!generation.ok()) return generation.status();
  const bool in_place = *generation == kInPlace;
  store->generation_ = in_place ? 0 : *generation;
  // Leftovers of a Restore that crashed before (a staged next generation)
  // or after (the replaced one) its switch.
  RemoveOtherGenerations(dir, *generation);
  Meta meta;
  absl::StatusOr<std::shared_ptr<Db>> d =
      store->OpenDb(in_place ? dir : GenerationPath(dir, *generation), &meta);
  if (!d.ok()) return d.status();
  (*d)->in_place = in_place;
  {
    absl::MutexLock lock(&store->db_mu_);
    store->db_ = *std::move(d);
  }
  store->applied_index_ = meta.applied;
  store->revision_ = meta.revision;
  store->compact_revision_ = meta.compact_revision;
  absl::MutexLock lock(&store->alarms_mu_);
  store->alarms_ = std::move(meta.alarms);
  return store;
}

MvccStore::~MvccStore() = default;

std::shared_ptr<MvccStore::Db> MvccStore::db() const {
  absl::ReaderMutexLock lock(&db_mu_);
  return db_;
}

absl::Status MvccStore::Restore(const std::string& checkpoint_dir) {
  if (batch_open_.load()) {
    return absl::FailedPreconditionError(
        "cannot restore the store while an apply batch is open");
  }
  const uint64_t next = generation_ + 1;
  const std::string path = GenerationPath(root_, next);
  // A stale directory of that generation can only be a leftover.
  RemoveTree(path);
  if (rename(checkpoint_dir.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("move ", checkpoint_dir, " to ",
                                            path, ": ", std::strerror(errno)));
  }
  if (absl::Status s = SyncDir(root_); !s.ok()) return s;
  Meta meta;
  absl::StatusOr<std::shared_ptr<Db>> d = OpenDb(path, &meta);
  if (!d.ok()) {
    RemoveTree(path);
    return d.status();
  }
  // Everything RocksDB wrote while opening is durable before the switch.
  if (rocksdb::Status rs = (*d)->db->SyncWAL(); !rs.ok()) {
    d->reset();
    RemoveTree(path);
    return FromRocks(rs, "sync");
  }
  // The switch: from here on a restart opens the new generation.
  if (absl::Status s = WriteActive(root_, next); !s.ok()) {
    d->reset();
    RemoveTree(path);
    return s;
  }
  generation_ = next;
  std::shared_ptr<Db> old;
  {
    absl::MutexLock lock(&db_mu_);
    old = std::move(db_);
    db_ = *std::move(d);
  }
  old->remove_on_close = true;
  applied_index_ = meta.applied;
  revision_ = meta.revision;
  compact_revision_ = meta.compact_revision;
  {
    absl::MutexLock lock(&alarms_mu_);
    alarms_ = std::move(meta.alarms);
  }
  restores_.fetch_add(1);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MvccStore::CheckpointAppliedIndex(
    const std::string& checkpoint_dir) {
  rocksdb::DBOptions db_options;
  db_options.max_open_files = 16;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(
      db_options, checkpoint_dir,
      ColumnFamilies(rocksdb::ColumnFamilyOptions(),
                     rocksdb::ColumnFamilyOptions()),
      &handles, &raw);
  if (!s.ok()) return FromRocks(s, "open " + checkpoint_dir);
  Meta meta;
  absl::Status st = ReadMeta(raw, handles[1], &meta);
  for (rocksdb::ColumnFamilyHandle* h : handles)
    raw->DestroyColumnFamilyHandle(h);
  delete raw;
  if (!st.ok()) return st;
  return meta.applied;
}

absl::Status MvccStore::RebaseOnNewLog(
    const std::vector<std::string>& drop_records) {
  if (batch_open_) {
    return absl::FailedPreconditionError(
        "RebaseOnNewLog: an apply batch is open");
  }
  std::shared_ptr<Db> d = db();
  rocksdb::WriteBatch batch;
  batch.Put(d->meta, kMetaAppliedIndex, U64(0));
  for (const std::string& name : drop_records) {
    batch.Delete(d->meta, kMetaRecordPrefix + name);
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = d->db->Write(wo, &batch);
  if (!s.ok()) return FromRocks(s, "rebase");
  applied_index_ = 0;
  return absl::OkStatus();
}

absl::Status MvccStore::Sync() {
  std::shared_ptr<Db> d = db();
  rocksdb::Status s = d->db->SyncWAL();
  if (!s.ok()) return FromRocks(s, "sync");
  return absl::OkStatus();
}

absl::Status MvccStore::Range(const etcdserverpb::RangeRequest& req,
                              etcdserverpb::RangeResponse* resp) const {
  Count(options_.ranges);
  const std::shared_ptr<Db> d = db();
  SnapshotReader reader(d->db);
  // The revision and the data come from the same snapshot.
  uint64_t current = 1, compacted = 0;
  d->Revisions(reader, &current, &compacted);
  Families f{d->history, d->index, d->latest, d->lease};
  absl::Status s = DoRange(f, reader, static_cast<int64_t>(current),
                           static_cast<int64_t>(compacted), req, resp);
  if (s.ok()) resp->mutable_header()->set_revision(current);
  return s;
}

absl::Status MvccStore::History(int64_t from_revision, size_t max_events,
                                std::vector<mvccpb::Event>* events,
                                int64_t* next_revision,
                                size_t max_bytes) const {
  const std::shared_ptr<Db> d = db();
  SnapshotReader reader(d->db);
  if (from_revision < compact_revision()) return ErrCompacted();
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(d->history);
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
  const std::shared_ptr<Db> d = db();
  SnapshotReader reader(d->db);
  Families f{d->history, d->index, d->latest, d->lease};
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
  const std::shared_ptr<Db> d = db();
  SnapshotReader reader(d->db);
  uint64_t current = 1, compacted = 0;
  ReadRevisions(reader, d->meta, &current, &compacted);
  HashResult result;
  result.revision = revision <= 0 ? static_cast<int64_t>(current) : revision;
  result.compact_revision = static_cast<int64_t>(compacted);
  if (result.revision > static_cast<int64_t>(current)) return ErrFutureRev();
  if (result.revision < result.compact_revision) return ErrCompacted();
  uLong crc = crc32(0L, Z_NULL, 0);
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(d->history);
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
  const std::shared_ptr<Db> d = db();
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(d->db, &raw);
  if (!s.ok()) return FromRocks(s, "checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  s = checkpoint->CreateCheckpoint(dir);
  if (!s.ok()) return FromRocks(s, "checkpoint " + dir);
  return absl::OkStatus();
}

absl::Status MvccStore::Defragment() {
  const std::shared_ptr<Db> d = db();
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction =
      rocksdb::BottommostLevelCompaction::kForce;
  if (options_.defrag_inflight != nullptr) options_.defrag_inflight->Add(1);
  const absl::Time start = MonotonicNow();
  rocksdb::Status s;
  for (rocksdb::ColumnFamilyHandle* h : d->handles) {
    s = d->db->CompactRange(options, h, nullptr, nullptr);
    if (!s.ok()) break;
  }
  if (options_.defrag_inflight != nullptr) options_.defrag_inflight->Add(-1);
  if (!s.ok()) return FromRocks(s, "defragment");
  if (options_.defrag_seconds != nullptr) {
    options_.defrag_seconds->ObserveDuration(MonotonicNow() - start);
  }
  return absl::OkStatus();
}

absl::Status MvccStore::LeaseKeys(int64_t lease_id,
                                  std::vector<std::string>* keys) const {
  const std::shared_ptr<Db> d = db();
  SnapshotReader reader(d->db);
  std::string prefix = U64(static_cast<uint64_t>(lease_id));
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(d->lease);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
       it->Next()) {
    keys->emplace_back(it->key().data() + 8, it->key().size() - 8);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "lease keys");
  return absl::OkStatus();
}

static std::string LeaseRecordKey(int64_t lease_id) {
  return absl::StrCat(kMetaLeasePrefix, U64(static_cast<uint64_t>(lease_id)));
}

absl::Status MvccStore::LeaseRecords(
    std::vector<std::pair<int64_t, std::string>>* records) const {
  const std::shared_ptr<Db> d = db();
  SnapshotReader reader(d->db);
  const absl::string_view prefix = kMetaLeasePrefix;
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator(d->meta);
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size()));
       it->Valid() &&
       it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()));
       it->Next()) {
    if (it->key().size() != prefix.size() + 8) {
      return absl::InternalError("corrupt store: lease record key");
    }
    int64_t id = static_cast<int64_t>(ReadBigEndian64(
        absl::string_view(it->key().data() + prefix.size(), 8)));
    records->emplace_back(id, it->value().ToString());
  }
  if (!it->status().ok()) return FromRocks(it->status(), "lease records");
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
  const std::shared_ptr<Db> d = db();
  const int64_t target = compact_revision();
  std::string done_bytes;
  uint64_t done = 0;
  rocksdb::Status rs = d->db->Get(rocksdb::ReadOptions(), d->meta,
                                  kMetaCompactDone, &done_bytes);
  if (rs.ok() && done_bytes.size() == 8) done = ReadBigEndian64(done_bytes);
  if (static_cast<int64_t>(done) >= target) return true;
  if (compact_cursor_revision_ != target || compact_cursor_db_ != d->id) {
    compact_cursor_.clear();
    compact_cursor_revision_ = target;
    compact_cursor_db_ = d->id;
  }

  rocksdb::WriteBatch batch;
  std::unique_ptr<rocksdb::Iterator> it(
      d->db->NewIterator(rocksdb::ReadOptions(), d->index));
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
        batch.Delete(d->index, it->key());
        batch.Delete(d->history, EncodeRevision(r));
      }
    }
    it->Next();
  }
  if (!it->status().ok()) return FromRocks(it->status(), "compact scan");
  bool finished = !it->Valid();
  if (finished) {
    batch.Put(d->meta, kMetaCompactDone, U64(static_cast<uint64_t>(target)));
    compact_cursor_.clear();
  } else {
    compact_cursor_ = IndexKeyLowerBound(k);
  }
  rs = d->db->Write(rocksdb::WriteOptions(), &batch);
  if (!rs.ok()) return FromRocks(rs, "compact write");
  return finished;
}

uint64_t MvccStore::ApproximateSizeBytes() const {
  const std::shared_ptr<Db> d = db();
  // Files on disk plus what is still in memtables, over every column family.
  uint64_t total = 0;
  for (rocksdb::ColumnFamilyHandle* h : d->handles) {
    uint64_t sst = 0, mem = 0;
    d->db->GetIntProperty(h, rocksdb::DB::Properties::kTotalSstFilesSize, &sst);
    d->db->GetIntProperty(h, rocksdb::DB::Properties::kCurSizeAllMemTables,
                          &mem);
    total += sst + mem;
  }
  return total;
}

// ---------------------------------------------------------------------------
// ApplyBatch

struct ApplyBatch::Impl {
  explicit Impl(const MvccStore::Db& db)
      : batch(db.db, db.latest, db.handles) {}
  PendingBatch batch;
  const LeaseOracle* leases = nullptr;
  std::vector<mvccpb::Event> events;
  // Per request: whether it wrote, and the next sub revision.
  bool wrote = false;
  int64_t sub = 0;
  bool finished = false;
};

ApplyBatch::ApplyBatch(MvccStore* store, const LeaseOracle* leases)
    : store_(store),
      db_(store->db()),
      impl_(std::make_unique<Impl>(*db_)),
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
    impl_->batch.RollbackToSavePoint();
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

void ApplyBatch::WritePut(mvccpb::KeyValue kv, mvccpb::KeyValue* prev) {
  Revision rev{write_revision(), impl_->sub++};
  // history holds the flag and the serialized version; latest the same
  // bytes without the flag.
  std::string history;
  history.push_back(kPutFlag);
  kv.AppendToString(&history);
  const rocksdb::Slice flag(&kPutFlag, 1);
  Families f{db_->history, db_->index, db_->latest, db_->lease};
  impl_->batch.Put(f.history, EncodeRevision(rev), history);
  impl_->batch.Put(f.index, EncodeIndexKey(kv.key(), rev), flag);
  impl_->batch.Put(f.latest, kv.key(),
                   rocksdb::Slice(history.data() + 1, history.size() - 1));
  if (prev != nullptr && prev->lease() != 0 && prev->lease() != kv.lease()) {
    impl_->batch.Delete(f.lease, LeaseKey(prev->lease(), kv.key()));
  }
  if (kv.lease() != 0) {
    impl_->batch.Put(f.lease, LeaseKey(kv.lease(), kv.key()), "");
  }
  mvccpb::Event ev;
  ev.set_type(mvccpb::Event::PUT);
  *ev.mutable_kv() = std::move(kv);
  if (prev != nullptr) *ev.mutable_prev_kv() = std::move(*prev);
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
  impl_->batch.Put(db_->history, EncodeRevision(rev), history);
  impl_->batch.Put(db_->index, EncodeIndexKey(prev.key(), rev),
                   std::string(1, kTombstoneFlag));
  impl_->batch.Delete(db_->latest, prev.key());
  if (prev.lease() != 0) {
    impl_->batch.Delete(db_->lease, LeaseKey(prev.lease(), prev.key()));
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
  Count(store_->options_.ranges);
  // Inside a transaction that wrote, reads see its writes at its revision.
  int64_t current = impl_->wrote ? write_revision() : revision_;
  Families f{db_->history, db_->index, db_->latest, db_->lease};
  absl::Status s =
      DoRange(f, impl_->batch, current, compact_revision_, req, resp);
  if (s.ok()) resp->mutable_header()->set_revision(current);
  return s;
}

namespace {

bool Has(const std::vector<etcdserverpb::AlarmMember>& alarms,
         etcdserverpb::AlarmType type) {
  for (const auto& a : alarms) {
    if (a.alarm() == type) return true;
  }
  return false;
}

bool NoSpace(const std::vector<etcdserverpb::AlarmMember>& alarms) {
  return Has(alarms, etcdserverpb::NOSPACE);
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
  Count(store_->options_.puts);
  absl::StatusOr<std::string> prev_bytes =
      impl_->batch.Get(db_->latest, req.key());
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
  if (req.prev_kv() && exists) *resp->mutable_prev_kv() = prev;
  WritePut(std::move(kv), exists ? &prev : nullptr);
  resp->mutable_header()->set_revision(main);
  return absl::OkStatus();
}

absl::Status ApplyBatch::DeleteRangeLocked(
    const etcdserverpb::DeleteRangeRequest& req,
    etcdserverpb::DeleteRangeResponse* resp) {
  if (req.key().empty()) return ErrEmptyKey();
  Count(store_->options_.deletes);
  Families f{db_->history, db_->index, db_->latest, db_->lease};
  RangeSink sink;
  int64_t current = impl_->wrote ? write_revision() : revision_;
  if (absl::Status s = ScanRange(f, impl_->batch, req.key(), req.range_end(),
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

bool ApplyBatch::HasAlarm(etcdserverpb::AlarmType type) const {
  return Has(alarms_, type);
}

absl::Status ApplyBatch::Put(const etcdserverpb::PutRequest& req,
                             etcdserverpb::PutResponse* resp) {
  if (HasAlarm(etcdserverpb::CORRUPT)) return ErrCorrupt();
  return ApplyOne([&] { return PutLocked(req, resp); });
}

absl::Status ApplyBatch::DeleteRange(
    const etcdserverpb::DeleteRangeRequest& req,
    etcdserverpb::DeleteRangeResponse* resp) {
  if (HasAlarm(etcdserverpb::CORRUPT)) return ErrCorrupt();
  return ApplyOne([&] { return DeleteRangeLocked(req, resp); });
}

absl::Status ApplyBatch::Txn(const etcdserverpb::TxnRequest& req,
                             etcdserverpb::TxnResponse* resp) {
  if (HasAlarm(etcdserverpb::CORRUPT)) return ErrCorrupt();
  if (NoSpace(alarms_) && !TxnReadOnly(req)) return ErrNoSpace();
  absl::Status s = ApplyOne([&] { return TxnLocked(req, resp); });
  if (s.ok() && TxnOps(*resp) > 1) Count(store_->options_.txns);
  return s;
}

absl::Status ApplyBatch::Alarm(const etcdserverpb::AlarmRequest& req,
                               etcdserverpb::AlarmResponse* resp) {
  auto match = [&](const etcdserverpb::AlarmMember& a) {
    return a.memberid() == req.memberid() && a.alarm() == req.alarm();
  };
  // As etcd's: GET answers the alarms of the type asked (NONE: all),
  // ACTIVATE the alarm raised, DEACTIVATE the ones cleared.
  switch (req.action()) {
    case etcdserverpb::AlarmRequest::GET:
      for (const auto& a : alarms_) {
        if (req.alarm() == etcdserverpb::NONE || a.alarm() == req.alarm()) {
          *resp->add_alarms() = a;
        }
      }
      break;
    case etcdserverpb::AlarmRequest::ACTIVATE: {
      if (req.alarm() == etcdserverpb::NONE) {
        return absl::InvalidArgumentError("etcdserver: no alarm given");
      }
      etcdserverpb::AlarmMember a;
      a.set_memberid(req.memberid());
      a.set_alarm(req.alarm());
      if (std::none_of(alarms_.begin(), alarms_.end(), match)) {
        alarms_.push_back(a);
        alarms_changed_ = true;
      }
      *resp->add_alarms() = a;
      break;
    }
    case etcdserverpb::AlarmRequest::DEACTIVATE: {
      auto it = std::stable_partition(
          alarms_.begin(), alarms_.end(), [&](const auto& a) {
            // Disarming with NONE clears the member's alarms of every kind.
            return !(a.memberid() == req.memberid() &&
                     (req.alarm() == etcdserverpb::NONE ||
                      a.alarm() == req.alarm()));
          });
      for (auto cleared = it; cleared != alarms_.end(); ++cleared) {
        *resp->add_alarms() = *cleared;
      }
      if (it != alarms_.end()) {
        alarms_.erase(it, alarms_.end());
        alarms_changed_ = true;
      }
      break;
    }
    default:
      return absl::InvalidArgumentError("etcdserver: unknown alarm action");
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
  if (HasAlarm(etcdserverpb::CORRUPT)) return ErrCorrupt();
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
          impl_->batch.NewIterator(db_->lease);
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
           it->Next()) {
        keys.emplace_back(it->key().data() + 8, it->key().size() - 8);
      }
      if (!it->status().ok()) return FromRocks(it->status(), "lease keys");
    }
    for (const std::string& key : keys) {
      absl::StatusOr<std::string> bytes = impl_->batch.Get(db_->latest, key);
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

void ApplyBatch::PutRecord(const std::string& name, const std::string& value) {
  impl_->batch.Put(db_->meta, kMetaRecordPrefix + name, value);
}

absl::StatusOr<std::string> MvccStore::GetRecord(
    const std::string& name) const {
  const std::shared_ptr<Db> d = db();
  std::string value;
  rocksdb::Status s = d->db->Get(rocksdb::ReadOptions(), d->meta,
                                 kMetaRecordPrefix + name, &value);
  if (s.IsNotFound()) return absl::NotFoundError("no record " + name);
  if (!s.ok()) return FromRocks(s, "record");
  return value;
}

void ApplyBatch::PutLeaseRecord(int64_t lease_id, const std::string& record) {
  impl_->batch.Put(db_->meta, LeaseRecordKey(lease_id), record);
}

void ApplyBatch::DeleteLeaseRecord(int64_t lease_id) {
  impl_->batch.Delete(db_->meta, LeaseRecordKey(lease_id));
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
  rocksdb::WriteBatch& b = *impl_->batch.writes();
  b.Put(db_->meta, kMetaAppliedIndex, U64(applied_index));
  b.Put(db_->meta, kMetaRevision, U64(static_cast<uint64_t>(revision_)));
  b.Put(db_->meta, kMetaCompactRevision,
        U64(static_cast<uint64_t>(compact_revision_)));
  if (alarms_changed_) {
    etcdserverpb::AlarmResponse alarms;
    for (const auto& a : alarms_) *alarms.add_alarms() = a;
    b.Put(db_->meta, kMetaAlarms, alarms.SerializeAsString());
  }
  rocksdb::WriteOptions wo;
  wo.sync = store_->options_.sync;
  const absl::Time start = MonotonicNow();
  rocksdb::Status s = db_->db->Write(wo, &b);
  if (s.ok() && store_->options_.commit_seconds != nullptr) {
    store_->options_.commit_seconds->ObserveDuration(MonotonicNow() - start);
  }
  if (s.ok()) {
    db_->SetRevisions(static_cast<uint64_t>(revision_),
                      static_cast<uint64_t>(compact_revision_));
  }
  // A finished batch must not keep its database open (a Restore or a
  // reopen may want it gone).
  db_.reset();
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
