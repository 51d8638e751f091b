// The workloads. Each one sets up what it needs (leases, watchers), runs its
// measured phase, and fills a Result; request failures are counted, not
// returned.
#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/loadgen/driver.h"
#include "bench/loadgen/keys.h"
#include "bench/loadgen/loadgen.h"

namespace lockd_bench {
namespace {

using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;

constexpr const char* kLockName = "lockd-bench-lock";
// Bounds the memory of watch-latency's per-event records (16 bytes each).
constexpr uint64_t kLatencyRecordsMax = 4000000;

std::function<void(grpc::Status)> Wrap(
    std::function<void(const grpc::Status&)> done) {
  return [done = std::move(done)](grpc::Status status) { done(status); };
}

std::unique_ptr<grpc::ClientContext> ContextWithTimeout(absl::Duration d) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoNanoseconds(d));
  return ctx;
}

// What every workload shares.
struct Env {
  const Config& config;
  Conns* conns;
  const KeySpace* keys;
  std::string value;
  Scheduler* scheduler;
};

// Measures the loadgen's own CPU and the members' CPU over one phase.
class Phase {
 public:
  explicit Phase(const Config& config) : pids_(config.pids) {
    wall_start_ns_ = NowNs();
    self_start_ns_ = SelfCpuNs();
    for (int pid : pids_) server_start_ns_.push_back(ProcCpuNs(pid));
  }
  void End(Result* r) {
    const double wall = static_cast<double>(NowNs() - wall_start_ns_);
    const double self_ns = static_cast<double>(SelfCpuNs() - self_start_ns_);
    r->loadgen_cpu_pct = wall > 0 ? 100.0 * self_ns / wall : 0;
    r->metrics.emplace_back("loadgen_cpu_us_per_op",
                            r->ops > 0 ? self_ns / 1e3 / r->ops : 0);
    if (pids_.empty()) return;
    double server_ns = 0;
    for (size_t i = 0; i < pids_.size(); ++i) {
      const int64_t now = ProcCpuNs(pids_[i]);
      if (now >= 0 && server_start_ns_[i] >= 0) {
        server_ns += static_cast<double>(now - server_start_ns_[i]);
      }
    }
    r->metrics.emplace_back("server_cpu_pct",
                            wall > 0 ? 100 * server_ns / wall : 0);
    r->metrics.emplace_back("server_cpu_us_per_op",
                            r->ops > 0 ? server_ns / 1e3 / r->ops : 0);
  }

 private:
  std::vector<int> pids_;
  uint64_t wall_start_ns_, self_start_ns_;
  std::vector<int64_t> server_start_ns_;
};

void AddErrors(const std::map<std::string, uint64_t>& from, Result* r) {
  for (const auto& [code, n] : from) r->errors[code] += n;
}

// ---------------------------------------------------------------------------
// Unary ops.

class PutOp : public ClientOp {
 public:
  PutOp(const Env& env, uint64_t client, bool record_revisions)
      : stub_(env.conns->kv(env.conns->For(client))),
        picker_(env.keys, env.config.sequential_keys, client,
                env.config.clients, env.config.seed),
        record_(record_revisions) {
    req_.set_value(env.value);
  }
  void Start(grpc::ClientContext* ctx,
             std::function<void(const grpc::Status&)> done) override {
    req_.set_key(picker_.NextKey());
    const uint64_t sent = NowNs();
    stub_->async()->Put(
        ctx, &req_, &resp_,
        [this, sent, done = std::move(done)](grpc::Status s) {
          if (s.ok() && record_) {
            puts_.push_back({resp_.header().revision(), sent, NowNs()});
          }
          done(s);
        });
  }
  struct PutRecord {
    int64_t revision;
    uint64_t sent_ns, returned_ns;
  };
  const std::vector<PutRecord>& puts() const { return puts_; }

 private:
  etcdserverpb::KV::Stub* stub_;
  KeyPicker picker_;
  bool record_;
  etcdserverpb::PutRequest req_;
  etcdserverpb::PutResponse resp_;
  std::vector<PutRecord> puts_;
};

class RangeOp : public ClientOp {
 public:
  RangeOp(const Env& env, uint64_t client)
      : stub_(env.conns->kv(env.conns->For(client))),
        picker_(env.keys, env.config.sequential_keys, client,
                env.config.clients, env.config.seed) {
    req_.set_serializable(env.config.consistency == "s");
  }
  void Start(grpc::ClientContext* ctx,
             std::function<void(const grpc::Status&)> done) override {
    req_.set_key(picker_.NextKey());
    stub_->async()->Range(ctx, &req_, &resp_, Wrap(std::move(done)));
  }

 private:
  etcdserverpb::KV::Stub* stub_;
  KeyPicker picker_;
  etcdserverpb::RangeRequest req_;
  etcdserverpb::RangeResponse resp_;
};

// A txn whose compare always holds (version > -1) and whose success branch
// puts the key: the shape of an orchestrator's guarded write.
class TxnPutOp : public ClientOp {
 public:
  TxnPutOp(const Env& env, uint64_t client)
      : stub_(env.conns->kv(env.conns->For(client))),
        picker_(env.keys, env.config.sequential_keys, client,
                env.config.clients, env.config.seed) {
    auto* cmp = req_.add_compare();
    cmp->set_result(etcdserverpb::Compare::GREATER);
    cmp->set_target(etcdserverpb::Compare::VERSION);
    cmp->set_version(-1);
    req_.add_success()->mutable_request_put()->set_value(env.value);
  }
  void Start(grpc::ClientContext* ctx,
             std::function<void(const grpc::Status&)> done) override {
    const std::string key = picker_.NextKey();
    req_.mutable_compare(0)->set_key(key);
    req_.mutable_success(0)->mutable_request_put()->set_key(key);
    stub_->async()->Txn(ctx, &req_, &resp_,
                        [this, done = std::move(done)](grpc::Status s) {
                          if (s.ok() && !resp_.succeeded()) {
                            ++compare_failed_;
                          }
                          done(s);
                        });
  }
  void Collect(Result* r) override {
    if (compare_failed_ > 0) r->errors["txn_compare_failed"] += compare_failed_;
  }

 private:
  etcdserverpb::KV::Stub* stub_;
  KeyPicker picker_;
  etcdserverpb::TxnRequest req_;
  etcdserverpb::TxnResponse resp_;
  uint64_t compare_failed_ = 0;
};

// Mostly ranges, some guarded writes.
class MixedOp : public ClientOp {
 public:
  MixedOp(const Env& env, uint64_t client)
      : range_(env, client),
        txn_(env, client),
        read_percent_(env.config.read_percent),
        rng_(env.config.seed * 31 + client) {}
  int Kind() override {
    kind_ = rng_() % 100 < read_percent_ ? 0 : 1;
    return kind_;
  }
  void Start(grpc::ClientContext* ctx,
             std::function<void(const grpc::Status&)> done) override {
    if (kind_ == 0) {
      range_.Start(ctx, std::move(done));
    } else {
      txn_.Start(ctx, std::move(done));
    }
  }
  void Collect(Result* r) override { txn_.Collect(r); }

 private:
  RangeOp range_;
  TxnPutOp txn_;
  uint64_t read_percent_;
  std::mt19937_64 rng_;
  int kind_ = 0;
};

// Lock then Unlock through the v3lockpb service, with this client's lease.
class LockOp : public ClientOp {
 public:
  LockOp(const Env& env, uint64_t client, int64_t lease_id,
         absl::Duration timeout)
      : stub_(env.conns->lock(env.conns->For(client))), timeout_(timeout) {
    lock_req_.set_name(
        env.config.lock_names <= 1
            ? std::string(kLockName)
            : absl::StrCat(kLockName, "/", client % env.config.lock_names));
    lock_req_.set_lease(lease_id);
  }
  void Start(grpc::ClientContext* ctx,
             std::function<void(const grpc::Status&)> done) override {
    const uint64_t sent = NowNs();
    stub_->async()->Lock(
        ctx, &lock_req_, &lock_resp_,
        [this, sent, done = std::move(done)](grpc::Status s) mutable {
          if (!s.ok()) {
            done(s);
            return;
          }
          const uint64_t acquired = NowNs();
          acquire_ns_.Record(acquired - sent);
          unlock_req_.set_key(lock_resp_.key());
          unlock_ctx_ = ContextWithTimeout(timeout_);
          stub_->async()->Unlock(
              unlock_ctx_.get(), &unlock_req_, &unlock_resp_,
              [this, acquired, done = std::move(done)](grpc::Status s) {
                if (s.ok()) unlock_ns_.Record(NowNs() - acquired);
                done(s);
              });
        });
  }
  void Collect(Result* r) override {
    Merge(r, "acquire", acquire_ns_);
    Merge(r, "unlock", unlock_ns_);
  }

 private:
  static void Merge(Result* r, const std::string& name, const Histogram& h) {
    for (auto& [n, existing] : r->histograms_ns) {
      if (n == name) {
        existing.Merge(h);
        return;
      }
    }
    r->histograms_ns.emplace_back(name, h);
  }
  v3lockpb::Lock::Stub* stub_;
  absl::Duration timeout_;
  v3lockpb::LockRequest lock_req_;
  v3lockpb::LockResponse lock_resp_;
  v3lockpb::UnlockRequest unlock_req_;
  v3lockpb::UnlockResponse unlock_resp_;
  std::unique_ptr<grpc::ClientContext> unlock_ctx_;
  Histogram acquire_ns_, unlock_ns_;
};

// Runs `ops` as closed-loop clients over the config's budget and fills the
// result's ops, errors, duration and latencies (merged over kinds; per kind
// too when there are several).
void RunUnary(const Env& env, std::vector<std::unique_ptr<ClientOp>>& ops,
              const std::vector<std::string>& kinds, Result* r) {
  std::vector<ClientOp*> raw;
  for (auto& op : ops) raw.push_back(op.get());
  Budget budget(env.config.total, env.config.duration, env.config.rate);
  budget.Start();
  DriverStats stats = RunClients(raw, static_cast<int>(kinds.size()), &budget,
                                 env.scheduler, env.config.request_timeout);
  r->ops += stats.ops;
  AddErrors(stats.errors, r);
  if (stats.last_done_ns > stats.first_start_ns) {
    r->duration_s = (stats.last_done_ns - stats.first_start_ns) / 1e9;
  }
  for (size_t k = 0; k < kinds.size(); ++k) {
    r->latency_ns.Merge(stats.latency_ns[k]);
    if (kinds.size() > 1) {
      r->histograms_ns.emplace_back(kinds[k], stats.latency_ns[k]);
    }
  }
  for (auto& op : ops) op->Collect(r);
}

// ---------------------------------------------------------------------------
// Streams.

// Counts streams still open and how they ended. Thread-safe.
class StreamGroup {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++open_;
  }
  void Done(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    --open_;
    if (!status.ok() &&
        !(cancelling_ && status.error_code() == grpc::CANCELLED)) {
      ++errors_[CodeName(status.error_code())];
    }
  }
  void Error(const std::string& reason) {
    absl::MutexLock lock(&mu_);
    ++errors_[reason];
  }
  void SetCancelling() {
    absl::MutexLock lock(&mu_);
    cancelling_ = true;
  }
  // True if all streams ended within `timeout`.
  bool WaitAllDone(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(
        absl::Condition(
            +[](int* open) { return *open == 0; }, &open_),
        timeout);
  }
  std::map<std::string, uint64_t> errors() {
    absl::MutexLock lock(&mu_);
    return errors_;
  }
  int open() {
    absl::MutexLock lock(&mu_);
    return open_;
  }

 private:
  absl::Mutex mu_;
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelling_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, uint64_t> errors_ ABSL_GUARDED_BY(mu_);
};

// Watchers on one Watch stream, all on the same range. Counts created
// watchers and delivered events; with `record`, keeps (revision, received)
// per event for watch-latency.
class WatchStream
    : public grpc::ClientBidiReactor<WatchRequest, WatchResponse> {
 public:
  struct Shared {
    std::atomic<uint64_t> created{0};
    std::atomic<uint64_t> events{0};
    // Responses that carried events: events per response tells how well a
    // server batches a watcher's events.
    std::atomic<uint64_t> event_responses{0};
    std::atomic<uint64_t> last_event_ns{0};
    std::atomic<uint64_t> records{0};
    StreamGroup group;
  };
  struct EventRecord {
    int64_t revision;
    uint64_t received_ns;
  };

  WatchStream(Shared* shared, etcdserverpb::Watch::Stub* stub, int watchers,
              const std::string& key, const std::string& range_end, bool record)
      : shared_(shared), stub_(stub), watchers_(watchers), record_(record) {
    auto* create = req_.mutable_create_request();
    create->set_key(key);
    create->set_range_end(range_end);
  }
  void Begin() {
    shared_->group.Add();
    stub_->async()->Watch(&ctx_, this);
    StartRead(&resp_);
    if (watchers_ > 0) StartWrite(&req_);
    StartCall();
  }
  void Cancel() { ctx_.TryCancel(); }
  const std::vector<EventRecord>& records() const { return records_; }

  void OnWriteDone(bool ok) override {
    if (ok && ++sent_ < watchers_) StartWrite(&req_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    const uint64_t now = NowNs();
    if (resp_.created()) shared_->created.fetch_add(1);
    if (resp_.canceled()) shared_->group.Error("watch_canceled");
    const int n = resp_.events_size();
    if (n > 0) {
      shared_->events.fetch_add(n);
      shared_->event_responses.fetch_add(1);
      uint64_t last = shared_->last_event_ns.load();
      while (last < now &&
             !shared_->last_event_ns.compare_exchange_weak(last, now)) {
      }
      if (record_ && shared_->records.fetch_add(n) + n <= kLatencyRecordsMax) {
        for (const auto& ev : resp_.events()) {
          records_.push_back({ev.kv().mod_revision(), now});
        }
      }
    }
    StartRead(&resp_);
  }
  void OnDone(const grpc::Status& status) override {
    shared_->group.Done(status);
  }

 private:
  Shared* shared_;
  etcdserverpb::Watch::Stub* stub_;
  const int watchers_;
  const bool record_;
  int sent_ = 0;
  grpc::ClientContext ctx_;
  WatchRequest req_;
  WatchResponse resp_;
  std::vector<EventRecord> records_;
};

// Opens config.watchers watchers over config.watch_streams streams on the
// whole key space and waits until every watcher is created.
class Watchers {
 public:
  absl::Status Open(const Env& env, bool record) {
    const uint64_t streams = std::max<uint64_t>(
        1, std::min(env.config.watch_streams,
                    std::max<uint64_t>(env.config.watchers, 1)));
    for (uint64_t s = 0; s < streams; ++s) {
      const int n = static_cast<int>(env.config.watchers / streams +
                                     (s < env.config.watchers % streams));
      streams_.push_back(std::make_unique<WatchStream>(
          &shared_, env.conns->watch(env.conns->For(s)), n,
          env.keys->RangeStart(), env.keys->RangeEnd(), record));
    }
    for (auto& s : streams_) s->Begin();
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (shared_.created.load() < env.config.watchers) {
      if (absl::Now() > deadline) {
        Close();
        return absl::DeadlineExceededError(
            absl::StrFormat("only %d of %d watchers created in 30s",
                            shared_.created.load(), env.config.watchers));
      }
      absl::SleepFor(absl::Milliseconds(1));
    }
    return absl::OkStatus();
  }
  // Waits up to `timeout` for at least `events` events in total.
  void WaitEvents(uint64_t events, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (shared_.events.load() < events && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  void Close() {
    shared_.group.SetCancelling();
    for (auto& s : streams_) s->Cancel();
    shared_.group.WaitAllDone(absl::InfiniteDuration());
  }
  WatchStream::Shared& shared() { return shared_; }
  const std::vector<std::unique_ptr<WatchStream>>& streams() {
    return streams_;
  }

 private:
  WatchStream::Shared shared_;
  std::vector<std::unique_ptr<WatchStream>> streams_;
};

// One lease kept alive as fast as the server answers: send a keep-alive,
// wait for its answer, repeat while the budget lasts; then half-close.
class KeepAliveStream
    : public grpc::ClientBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                                     etcdserverpb::LeaseKeepAliveResponse> {
 public:
  KeepAliveStream(StreamGroup* group, etcdserverpb::Lease::Stub* stub,
                  int64_t lease_id, Budget* budget, Scheduler* scheduler)
      : group_(group), stub_(stub), budget_(budget), scheduler_(scheduler) {
    req_.set_id(lease_id);
  }
  void Begin() {
    group_->Add();
    stub_->async()->LeaseKeepAlive(&ctx_, this);
    StartRead(&resp_);
    SendNext();
    StartCall();
  }
  void Cancel() { ctx_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    const uint64_t now = NowNs();
    if (resp_.ttl() <= 0) {
      ++not_found_;
    } else {
      ++ok_;
      latency_ns_.Record(now - sent_ns_);
    }
    last_done_ns_ = now;
    StartRead(&resp_);
    StepDone();
  }
  void OnWriteDone(bool ok) override {
    if (ok) StepDone();
  }
  void OnDone(const grpc::Status& status) override { group_->Done(status); }

  uint64_t ok() const { return ok_; }
  uint64_t not_found() const { return not_found_; }
  const Histogram& latency_ns() const { return latency_ns_; }
  uint64_t first_sent_ns() const { return first_sent_ns_; }
  uint64_t last_done_ns() const { return last_done_ns_; }

 private:
  void SendNext() {
    uint64_t due_ns;
    if (!budget_->Next(&due_ns)) {
      StartWritesDone();
      return;
    }
    if (due_ns > NowNs()) {
      // Keep the stream alive across the wait.
      AddHold();
      scheduler_->At(due_ns, [this] {
        Write();
        RemoveHold();
      });
    } else {
      Write();
    }
  }
  // The answer can arrive before the write completes, and gRPC allows one
  // write in flight: the next keep-alive goes out once both have happened.
  void StepDone() {
    if (steps_left_.fetch_sub(1) == 1) SendNext();
  }
  void Write() {
    steps_left_.store(2);
    sent_ns_ = NowNs();
    if (first_sent_ns_ == 0) first_sent_ns_ = sent_ns_;
    StartWrite(&req_);
  }

  StreamGroup* group_;
  etcdserverpb::Lease::Stub* stub_;
  Budget* budget_;
  Scheduler* scheduler_;
  grpc::ClientContext ctx_;
  etcdserverpb::LeaseKeepAliveRequest req_;
  etcdserverpb::LeaseKeepAliveResponse resp_;
  uint64_t sent_ns_ = 0, first_sent_ns_ = 0, last_done_ns_ = 0;
  uint64_t ok_ = 0, not_found_ = 0;
  std::atomic<int> steps_left_{0};
  Histogram latency_ns_;
};

// Grants one lease per client, concurrently over the connections.
absl::StatusOr<std::vector<int64_t>> GrantLeases(const Env& env, uint64_t n,
                                                 int64_t ttl_s) {
  std::vector<int64_t> ids(n, 0);
  absl::Mutex mu;
  uint64_t pending = n;
  grpc::Status first_error;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<etcdserverpb::LeaseGrantRequest> reqs(n);
  std::vector<etcdserverpb::LeaseGrantResponse> resps(n);
  for (uint64_t i = 0; i < n; ++i) {
    ctxs.push_back(ContextWithTimeout(env.config.request_timeout));
    reqs[i].set_ttl(ttl_s);
    env.conns->lease(env.conns->For(i))
        ->async()
        ->LeaseGrant(ctxs[i].get(), &reqs[i], &resps[i],
                     [&, i](grpc::Status s) {
                       absl::MutexLock lock(&mu);
                       if (s.ok()) {
                         ids[i] = resps[i].id();
                       } else if (first_error.ok()) {
                         first_error = s;
                       }
                       --pending;
                     });
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](uint64_t* p) { return *p == 0; }, &pending));
  if (!first_error.ok()) {
    return absl::UnavailableError(
        absl::StrCat("LeaseGrant: ", CodeName(first_error.error_code()), ": ",
                     first_error.error_message()));
  }
  return ids;
}

// Best effort: the leases expire anyway.
void RevokeLeases(const Env& env, const std::vector<int64_t>& ids) {
  absl::Mutex mu;
  size_t pending = ids.size();
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<etcdserverpb::LeaseRevokeRequest> reqs(ids.size());
  std::vector<etcdserverpb::LeaseRevokeResponse> resps(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    ctxs.push_back(ContextWithTimeout(absl::Seconds(10)));
    reqs[i].set_id(ids[i]);
    env.conns->lease(env.conns->For(i))
        ->async()
        ->LeaseRevoke(ctxs[i].get(), &reqs[i], &resps[i], [&](grpc::Status) {
          absl::MutexLock lock(&mu);
          --pending;
        });
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](size_t* p) { return *p == 0; }, &pending));
}

// ---------------------------------------------------------------------------
// Workloads.

// One op per client, all issuing `kind` requests for the measured phase.
template <typename MakeOp>
absl::Status RunClients(const Env& env, const std::string& kind, Result* r,
                        MakeOp&& make_op) {
  std::vector<std::unique_ptr<ClientOp>> ops;
  for (uint64_t i = 0; i < env.config.clients; ++i) {
    ops.push_back(make_op(i));
  }
  Phase phase(env.config);
  RunUnary(env, ops, {kind}, r);
  phase.End(r);
  return absl::OkStatus();
}

absl::Status RunPut(const Env& env, Result* r) {
  return RunClients(env, "put", r, [&](uint64_t i) {
    return std::make_unique<PutOp>(env, i, false);
  });
}

absl::Status RunRange(const Env& env, Result* r) {
  return RunClients(env, "range", r, [&](uint64_t i) {
    return std::make_unique<RangeOp>(env, i);
  });
}

absl::Status RunTxnPut(const Env& env, Result* r) {
  return RunClients(env, "txn-put", r, [&](uint64_t i) {
    return std::make_unique<TxnPutOp>(env, i);
  });
}

absl::Status RunLeaseKeepAlive(const Env& env, Result* r) {
  auto ids = GrantLeases(env, env.config.clients, 600);
  if (!ids.ok()) return ids.status();
  StreamGroup group;
  Budget budget(env.config.total, env.config.duration, env.config.rate);
  std::vector<std::unique_ptr<KeepAliveStream>> streams;
  for (uint64_t i = 0; i < env.config.clients; ++i) {
    streams.push_back(std::make_unique<KeepAliveStream>(
        &group, env.conns->lease(env.conns->For(i)), (*ids)[i], &budget,
        env.scheduler));
  }
  Phase phase(env.config);
  budget.Start();
  for (auto& s : streams) s->Begin();
  // Every stream half-closes once the budget is spent; a server that never
  // ends a stream gets cancelled after the request timeout.
  // Streams that fail stop drawing on the budget, so stop waiting for it
  // once none is left open.
  while (!budget.over() && group.open() > 0) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  if (!group.WaitAllDone(env.config.request_timeout)) {
    group.Error("stream_not_closed_by_server");
    group.SetCancelling();
    for (auto& s : streams) s->Cancel();
    group.WaitAllDone(absl::InfiniteDuration());
  }
  uint64_t first = UINT64_MAX, last = 0, not_found = 0;
  for (auto& s : streams) {
    r->ops += s->ok();
    not_found += s->not_found();
    r->latency_ns.Merge(s->latency_ns());
    if (s->first_sent_ns() != 0) first = std::min(first, s->first_sent_ns());
    last = std::max(last, s->last_done_ns());
  }
  if (not_found > 0) r->errors["lease_not_found"] += not_found;
  if (last > first && first != UINT64_MAX) r->duration_s = (last - first) / 1e9;
  AddErrors(group.errors(), r);
  phase.End(r);
  RevokeLeases(env, *ids);
  return absl::OkStatus();
}

absl::Status RunWatch(const Env& env, bool latency, Result* r) {
  Watchers watchers;
  if (absl::Status s = watchers.Open(env, latency); !s.ok()) return s;
  std::vector<std::unique_ptr<ClientOp>> ops;
  std::vector<PutOp*> puts;
  for (uint64_t i = 0; i < env.config.clients; ++i) {
    auto op = std::make_unique<PutOp>(env, i, latency);
    puts.push_back(op.get());
    ops.push_back(std::move(op));
  }
  Phase phase(env.config);
  Result writer;
  const uint64_t writer_start_ns = NowNs();
  RunUnary(env, ops, {"put"}, &writer);
  const uint64_t expected = writer.ops * env.config.watchers;
  watchers.WaitEvents(expected, absl::Seconds(10));
  const uint64_t events = watchers.shared().events.load();
  const uint64_t last_event_ns = watchers.shared().last_event_ns.load();
  watchers.Close();
  AddErrors(writer.errors, r);
  AddErrors(watchers.shared().group.errors(), r);
  if (events < expected) r->errors["watch_events_missing"] += expected - events;

  r->histograms_ns.emplace_back("put", writer.latency_ns);
  r->metrics.emplace_back("puts", writer.ops);
  r->metrics.emplace_back("watchers", env.config.watchers);
  r->metrics.emplace_back("events_expected", expected);
  r->metrics.emplace_back("events_received", events);
  r->metrics.emplace_back("event_responses",
                          watchers.shared().event_responses.load());
  if (!latency) {
    // Throughput is events delivered per second, from the first put sent
    // to the last event received.
    r->ops = events;
    r->duration_s = writer.duration_s;
    if (last_event_ns > writer_start_ns) {
      r->duration_s = (last_event_ns - writer_start_ns) / 1e9;
    }
    r->latency_ns = writer.latency_ns;
    r->metrics.emplace_back("events_per_s", r->throughput());
  } else {
    std::unordered_map<int64_t, const PutOp::PutRecord*> by_revision;
    for (PutOp* op : puts) {
      for (const auto& rec : op->puts()) by_revision[rec.revision] = &rec;
    }
    // The primary latency runs from the put being sent to the event being
    // received: on a 3-member etcd 40-50% of events reach watchers on
    // other members before the put's answer reaches its client, so "put
    // returned -> event" (kept as a second histogram, clamped at 0) has a
    // median near 0. Events past kLatencyRecordsMax are counted, not timed.
    Histogram from_returned;
    uint64_t early = 0, unmatched = 0;
    for (const auto& stream : watchers.streams()) {
      for (const auto& ev : stream->records()) {
        auto it = by_revision.find(ev.revision);
        if (it == by_revision.end()) {
          ++unmatched;
          continue;
        }
        const PutOp::PutRecord& put = *it->second;
        if (ev.received_ns < put.returned_ns) ++early;
        from_returned.Record(ev.received_ns > put.returned_ns
                                 ? ev.received_ns - put.returned_ns
                                 : 0);
        r->latency_ns.Record(ev.received_ns - put.sent_ns);
      }
    }
    r->ops = r->latency_ns.count();
    r->duration_s = writer.duration_s;
    r->histograms_ns.emplace_back("put_returned_to_event", from_returned);
    r->metrics.emplace_back("events_before_put_returned", early);
    r->metrics.emplace_back("events_unmatched", unmatched);
    r->metrics.emplace_back("events_timed", r->latency_ns.count());
  }
  phase.End(r);
  return absl::OkStatus();
}

absl::Status RunLock(const Env& env, Result* r) {
  auto ids = GrantLeases(env, env.config.clients, env.config.lease_ttl_s);
  if (!ids.ok()) return ids.status();
  std::vector<std::unique_ptr<ClientOp>> ops;
  for (uint64_t i = 0; i < env.config.clients; ++i) {
    ops.push_back(std::make_unique<LockOp>(env, i, (*ids)[i],
                                           env.config.request_timeout));
  }
  Phase phase(env.config);
  RunUnary(env, ops, {"lock+unlock"}, r);
  phase.End(r);
  r->metrics.emplace_back("lock_names", env.config.lock_names);
  r->metrics.emplace_back("acquisitions_per_s", r->throughput());
  RevokeLeases(env, *ids);
  return absl::OkStatus();
}

absl::Status RunMixed(const Env& env, Result* r) {
  Watchers watchers;
  if (env.config.watchers > 0) {
    if (absl::Status s = watchers.Open(env, false); !s.ok()) return s;
  }
  std::vector<std::unique_ptr<ClientOp>> ops;
  for (uint64_t i = 0; i < env.config.clients; ++i) {
    ops.push_back(std::make_unique<MixedOp>(env, i));
  }
  Phase phase(env.config);
  RunUnary(env, ops, {"range", "txn-put"}, r);
  phase.End(r);
  const uint64_t events = watchers.shared().events.load();
  watchers.Close();
  AddErrors(watchers.shared().group.errors(), r);
  r->metrics.emplace_back("watchers", env.config.watchers);
  r->metrics.emplace_back("watch_events", events);
  r->metrics.emplace_back("watch_events_per_s",
                          r->duration_s > 0 ? events / r->duration_s : 0);
  return absl::OkStatus();
}

absl::Status RunDatascale(const Env& env, Result* r) {
  int64_t rss_before = 0;
  for (int pid : env.config.pids)
    rss_before += std::max<int64_t>(0, ProcRssBytes(pid));
  std::vector<std::unique_ptr<ClientOp>> ops;
  for (uint64_t i = 0; i < env.config.clients; ++i) {
    ops.push_back(std::make_unique<PutOp>(env, i, false));
  }
  Phase phase(env.config);
  RunUnary(env, ops, {"put"}, r);
  phase.End(r);
  r->metrics.emplace_back("keys_loaded", r->ops);
  r->metrics.emplace_back("rss_before_bytes_total", rss_before);
  int64_t rss_total = 0, dir_total = 0;
  for (int pid : env.config.pids) {
    const int64_t rss = ProcRssBytes(pid);
    r->metrics.emplace_back(absl::StrCat("rss_bytes_pid_", pid), rss);
    if (rss > 0) rss_total += rss;
  }
  for (size_t i = 0; i < env.config.data_dirs.size(); ++i) {
    const int64_t bytes = DirBytes(env.config.data_dirs[i]);
    r->metrics.emplace_back(absl::StrCat("data_dir_bytes_", i), bytes);
    if (bytes > 0) dir_total += bytes;
  }
  r->metrics.emplace_back("rss_bytes_total", rss_total);
  r->metrics.emplace_back("data_dir_bytes_total", dir_total);
  if (!env.config.pids.empty()) {
    r->metrics.emplace_back(
        "rss_bytes_per_member",
        rss_total / static_cast<double>(env.config.pids.size()));
  }
  return absl::OkStatus();
}

// Asks each endpoint for its status; the leader is the one whose own member
// id is the leader id it reports. A cluster just started (or between
// leaders) gets up to `wait` to have one.
absl::StatusOr<std::string> FindLeader(
    const std::vector<std::string>& endpoints,
    absl::Duration wait = absl::Seconds(10)) {
  const absl::Time give_up = absl::Now() + wait;
  std::string last_error = "no endpoints";
  for (int pass = 0; pass == 0 || absl::Now() < give_up; ++pass) {
    if (pass > 0) absl::SleepFor(absl::Milliseconds(100));
    for (const std::string& endpoint : endpoints) {
      auto channel = grpc::CreateChannel(StripScheme(endpoint),
                                         grpc::InsecureChannelCredentials());
      auto stub = etcdserverpb::Maintenance::NewStub(channel);
      auto ctx = ContextWithTimeout(absl::Seconds(5));
      etcdserverpb::StatusRequest req;
      etcdserverpb::StatusResponse resp;
      grpc::Status s = stub->Status(ctx.get(), req, &resp);
      if (!s.ok()) {
        last_error = absl::StrCat(endpoint, ": ", s.error_message());
        continue;
      }
      if (resp.leader() != 0 && resp.leader() == resp.header().member_id()) {
        return endpoint;
      }
      last_error = absl::StrCat(endpoint, ": not the leader");
    }
  }
  return absl::UnavailableError(absl::StrCat("no leader found: ", last_error));
}

constexpr const char* kWorkloads[] = {
    "put",           "range", "txn-put", "lease-keepalive", "watch",
    "watch-latency", "lock",  "mixed",   "datascale"};

absl::Status Validate(const Config& c) {
  if (std::find(std::begin(kWorkloads), std::end(kWorkloads), c.workload) ==
      std::end(kWorkloads)) {
    return absl::InvalidArgumentError("unknown workload: " + c.workload);
  }
  if (c.endpoints.empty()) return absl::InvalidArgumentError("no endpoints");
  if (c.conns == 0) return absl::InvalidArgumentError("conns must be > 0");
  if (c.clients == 0) return absl::InvalidArgumentError("clients must be > 0");
  if (c.format != "text" && c.format != "json") {
    return absl::InvalidArgumentError("format must be text or json");
  }
  if (c.consistency != "l" && c.consistency != "s") {
    return absl::InvalidArgumentError("consistency must be l or s");
  }
  if (c.read_percent > 100) {
    return absl::InvalidArgumentError("read-percent must be <= 100");
  }
  if ((c.workload == "watch" || c.workload == "watch-latency") &&
      c.watchers == 0) {
    return absl::InvalidArgumentError("watch workloads need watchers > 0");
  }
  if (c.lease_ttl_s <= 0)
    return absl::InvalidArgumentError("lease-ttl must be > 0");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Result> RunWorkload(const Config& config_in) {
  Config config = config_in;
  if (config.total == 0 && config.duration == absl::ZeroDuration()) {
    config.total = 10000;
  }
  if (config.workload == "datascale") {
    config.sequential_keys = true;
    config.key_space_size = std::max(config.key_space_size, config.total);
  }
  if (absl::Status s = Validate(config); !s.ok()) return s;
  auto keys = KeySpace::Create(config.key_size, config.key_space_size);
  if (!keys.ok()) return keys.status();

  Result r;
  r.workload = config.workload;
  if (config.target_leader) {
    auto leader = FindLeader(config.endpoints);
    if (!leader.ok()) return leader.status();
    config.endpoints = {*leader};
  }
  r.config = config;
  r.endpoint_used = absl::StrJoin(config.endpoints, ",");
  Conns conns(config.endpoints, config.conns);
  if (!conns.WaitConnected(absl::Seconds(10))) {
    return absl::UnavailableError("could not connect to " + r.endpoint_used);
  }
  Scheduler scheduler;
  Env env{config, &conns, &*keys, MakeValue(config.val_size, config.seed),
          &scheduler};

  absl::Status s;
  const std::string& w = config.workload;
  if (w == "put") {
    s = RunPut(env, &r);
  } else if (w == "range") {
    s = RunRange(env, &r);
  } else if (w == "txn-put") {
    s = RunTxnPut(env, &r);
  } else if (w == "lease-keepalive") {
    s = RunLeaseKeepAlive(env, &r);
  } else if (w == "watch") {
    s = RunWatch(env, false, &r);
  } else if (w == "watch-latency") {
    s = RunWatch(env, true, &r);
  } else if (w == "lock") {
    s = RunLock(env, &r);
  } else if (w == "mixed") {
    s = RunMixed(env, &r);
  } else if (w == "datascale") {
    s = RunDatascale(env, &r);
  } else {
    return absl::InvalidArgumentError("unknown workload: " + w);
  }
  if (!s.ok()) return s;
  return r;
}

}  // namespace lockd_bench
