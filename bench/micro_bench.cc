// Micro-benchmarks of the pieces on lockd's write and watch paths, each alone
// (real RocksDB on the local disk, no network):
//
//   BM_LogAppendSync/N   raft log: one synced Save of N 256-byte entries
//                        (a Ready batch); items = entries
//   BM_MvccApply/N       MVCC store: one ApplyBatch of N puts (8-byte keys,
//                        256-byte values) committed with its raft index;
//                        items = puts
//   BM_MvccApplyOnDisk/N the same on a store already holding 3 versions of
//                        each of 200,000 keys (most of it flushed to table
//                        files, as in a store that has run a while), so each
//                        put's lookup of its key goes to the files' indexes
//   BM_WatchFanout/W     watch hub: one committed put (applied to the store,
//                        then published) delivered to W watchers of a prefix
//                        on one stream; items = events delivered
//   BM_RequestCodec      a replicated Put command: encode + decode
//
//   bazel run --config=opt //bench:micro_bench
//   (set TMPDIR to put the RocksDB directories on the disk to measure)
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "kv/mvcc/store.h"
#include "kv/watch/hub.h"
#include "lockdpb/internal.pb.h"
#include "raft/storage/disk_storage.h"

namespace lockd {
namespace {

// A fresh directory under $TMPDIR (default /tmp), removed at exit.
std::string FreshDir(const char* name) {
  const char* base = std::getenv("TMPDIR");
  std::string templ = absl::StrFormat("%s/lockd-%s-XXXXXX",
                                      base != nullptr ? base : "/tmp", name);
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) std::abort();
  return std::string(buf.data());
}

void RemoveDir(const std::string& dir) {
  std::string cmd = "rm -rf '" + dir + "'";
  (void)!std::system(cmd.c_str());
}

class NoLeases final : public kv::LeaseOracle {
 public:
  bool LeaseExists(int64_t) const override { return false; }
};

void BM_LogAppendSync(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const std::string dir = FreshDir("log");
  auto storage = raft::DiskStorage::Open(dir);
  if (!storage.ok()) {
    state.SkipWithError(std::string(storage.status().message()).c_str());
    return;
  }
  uint64_t index = 0;
  const std::string data(256, 'x');
  for (auto _ : state) {
    std::vector<raft::Entry> entries(batch);
    for (raft::Entry& e : entries) {
      e.term = 1;
      e.index = ++index;
      e.data = data;
    }
    raft::HardState hs{1, raft::kNone, index};
    absl::Status s = (*storage)->Save(hs, entries, raft::Snapshot(), true);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  storage->reset();
  RemoveDir(dir);
}
BENCHMARK(BM_LogAppendSync)->Arg(1)->Arg(16)->Arg(256)->UseRealTime();

void BM_MvccApply(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const std::string dir = FreshDir("mvcc");
  auto store = kv::MvccStore::Open(dir);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  NoLeases leases;
  std::mt19937_64 rng(1);
  uint64_t index = 0;
  etcdserverpb::PutRequest req;
  req.set_value(std::string(256, 'v'));
  etcdserverpb::PutResponse resp;
  for (auto _ : state) {
    std::unique_ptr<kv::ApplyBatch> b = (*store)->BeginApply(&leases);
    for (int i = 0; i < batch; ++i) {
      req.set_key(absl::StrFormat("%08d", rng() % 100000));
      if (!b->Put(req, &resp).ok()) state.SkipWithError("put failed");
    }
    if (!b->Commit(++index).ok()) state.SkipWithError("commit failed");
  }
  state.SetItemsProcessed(state.iterations() * batch);
  store->reset();
  RemoveDir(dir);
}
BENCHMARK(BM_MvccApply)->Arg(1)->Arg(16)->Arg(256)->UseRealTime();

constexpr int kOnDiskKeys = 200000;
constexpr int kOnDiskVersions = 3;

// One preloaded store for all BM_MvccApplyOnDisk runs (loading takes
// seconds); removed at exit.
struct LoadedStore {
  std::string dir;
  std::unique_ptr<kv::MvccStore> store;
  uint64_t index = 0;
  ~LoadedStore() {
    store.reset();
    if (!dir.empty()) RemoveDir(dir);
  }
};

LoadedStore* OnDiskStore() {
  static LoadedStore* loaded = [] {
    auto* l = new LoadedStore;
    l->dir = FreshDir("mvcc-disk");
    auto store = kv::MvccStore::Open(l->dir);
    if (!store.ok()) return l;
    l->store = std::move(*store);
    NoLeases leases;
    etcdserverpb::PutRequest req;
    req.set_value(std::string(256, 'v'));
    etcdserverpb::PutResponse resp;
    for (int v = 0; v < kOnDiskVersions; ++v) {
      for (int k = 0; k < kOnDiskKeys; k += 256) {
        std::unique_ptr<kv::ApplyBatch> b = l->store->BeginApply(&leases);
        for (int i = k; i < k + 256 && i < kOnDiskKeys; ++i) {
          req.set_key(absl::StrFormat("%08d", i));
          if (!b->Put(req, &resp).ok()) std::abort();
        }
        if (!b->Commit(++l->index).ok()) std::abort();
      }
    }
    return l;
  }();
  return loaded;
}

void BM_MvccApplyOnDisk(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  LoadedStore* l = OnDiskStore();
  if (l->store == nullptr) {
    state.SkipWithError("cannot open the store");
    return;
  }
  NoLeases leases;
  std::mt19937_64 rng(2);
  etcdserverpb::PutRequest req;
  req.set_value(std::string(256, 'v'));
  etcdserverpb::PutResponse resp;
  for (auto _ : state) {
    std::unique_ptr<kv::ApplyBatch> b = l->store->BeginApply(&leases);
    for (int i = 0; i < batch; ++i) {
      req.set_key(absl::StrFormat("%08d", rng() % kOnDiskKeys));
      if (!b->Put(req, &resp).ok()) state.SkipWithError("put failed");
    }
    if (!b->Commit(++l->index).ok()) state.SkipWithError("commit failed");
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_MvccApplyOnDisk)->Arg(1)->Arg(16)->Arg(256)->UseRealTime();

void BM_WatchFanout(benchmark::State& state) {
  const int watchers = static_cast<int>(state.range(0));
  const std::string dir = FreshDir("watch");
  auto store = kv::MvccStore::Open(dir);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  {
    kv::WatchHub hub(store->get());
    hub.Start();
    std::atomic<uint64_t> wakes{0};
    std::shared_ptr<kv::WatchStream> stream =
        hub.OpenStream([&wakes] { wakes.fetch_add(1); });
    for (int w = 0; w < watchers; ++w) {
      kv::WatchSpec spec;
      spec.key = "k/";
      spec.range_end = "k0";  // the prefix k/
      if (!stream->Create(spec).ok()) state.SkipWithError("create failed");
    }
    std::vector<kv::WatchOutput> out;
    // Drain the "created" answers.
    while (stream->Take(&out) > 0) out.clear();
    // Each event is a real committed put (its apply cost is BM_MvccApply/1),
    // so a watcher that falls behind could catch up from the store.
    NoLeases leases;
    uint64_t index = 0;
    etcdserverpb::PutRequest req;
    req.set_key("k/a");
    req.set_value(std::string(256, 'v'));
    etcdserverpb::PutResponse resp;
    for (auto _ : state) {
      std::unique_ptr<kv::ApplyBatch> b = (*store)->BeginApply(&leases);
      if (!b->Put(req, &resp).ok()) state.SkipWithError("put failed");
      std::vector<mvccpb::Event> events = b->TakeEvents();
      if (!b->Commit(++index).ok()) state.SkipWithError("commit failed");
      hub.Publish(std::move(events));
      // One event output per watcher.
      size_t delivered = 0;
      while (delivered < static_cast<size_t>(watchers)) {
        out.clear();
        delivered += stream->Take(&out);
      }
    }
    state.SetItemsProcessed(state.iterations() * watchers);
    stream->Close();
    hub.Stop();
  }
  store->reset();
  RemoveDir(dir);
}
BENCHMARK(BM_WatchFanout)->Arg(1)->Arg(100)->Arg(1000)->UseRealTime();

void BM_RequestCodec(benchmark::State& state) {
  internal::Request req;
  req.set_version(1);
  req.set_origin_member(0x8e9e05c52164694d);
  req.set_id(12345);
  req.mutable_put()->set_key("12345678");
  req.mutable_put()->set_value(std::string(256, 'v'));
  std::string bytes;
  internal::Request back;
  for (auto _ : state) {
    bytes.clear();
    req.SerializeToString(&bytes);
    back.ParseFromString(bytes);
    benchmark::DoNotOptimize(back.put().key().size());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * bytes.size());
}
BENCHMARK(BM_RequestCodec);

}  // namespace
}  // namespace lockd

BENCHMARK_MAIN();
