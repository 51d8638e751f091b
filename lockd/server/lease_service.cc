#include "lockd/server/lease_service.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "kv/mvcc/errors.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"

namespace lockd {
namespace {

constexpr char kForwardedKey[] = "lockd-forwarded";
// The longest a call waits inside the server (KvService's bound).
// The driver's idle period; renewals and applied checkpoints wake it early.
constexpr absl::Duration kTick = absl::Milliseconds(50);
// How often the lessor looks for records to refresh: a quarter of its ack
// horizon, so an active lease's cover is extended well before it runs out.
constexpr absl::Duration kRefreshPeriod = absl::Milliseconds(250);
// Expiry proposals per second, etcd's leaseRevokeRate.
constexpr double kRevokesPerSecond = 1000;
// A checkpoint not applied by then is given up (its renewals are retried).
constexpr absl::Duration kCheckpointTimeout = absl::Seconds(3);

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

bool Forwarded(grpc::ServerContextBase* ctx) {
  return ctx->client_metadata().count(kForwardedKey) > 0;
}

grpc::Status NotLeader(uint64_t leader) {
  return grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      leader == 0 ? "etcdserver: no leader" : "etcdserver: leader changed");
}

uint64_t RandomU64() {
  std::random_device rd;
  return rd() | (uint64_t{rd()} << 32);
}

}  // namespace

// ---------------------------------------------------------------------------
// LeaseDriver

LeaseDriver::LeaseDriver(const ServerConfig* config, raft::RaftNode* node,
                         KvStateMachine* state_machine, kv::Lessor* lessor)
    : config_(config),
      node_(node),
      state_machine_(state_machine),
      lessor_(lessor),
      next_id_(RandomU64()) {}

LeaseDriver::~LeaseDriver() { Stop(); }

void LeaseDriver::Start() {
  next_refresh_ = MonotonicNow();
  last_revoke_ = MonotonicNow();
  // The next round comes a tick after this one ends, or when kicked.
  loop_.Start("lease-driver", MonotonicNow() + kTick, [this] {
    Step();
    return MonotonicNow() + kTick;
  });
}

void LeaseDriver::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  loop_.Stop();
  lessor_->Demote();
}

void LeaseDriver::Kick() { loop_.Kick(); }

void LeaseDriver::SyncLeadership() {
  bool stopped;
  {
    absl::MutexLock lock(&mu_);
    stopped = stop_;
  }
  absl::MutexLock lock(&sync_mu_);
  // A stopped driver proposes no checkpoints: nothing may wait for one.
  if (node_->is_leader() && !stopped) {
    lessor_->Promote(node_->term());
  } else {
    lessor_->Demote();
  }
}

void LeaseDriver::Step() {
  SyncLeadership();
  if (!node_->is_leader()) return;
  const absl::Time now = MonotonicNow();
  if (in_flight_seq_ != 0 && now > in_flight_deadline_) {
    state_machine_->Cancel(in_flight_id_);
    lessor_->CheckpointDone(in_flight_seq_, false);
    in_flight_seq_ = 0;
  }
  const bool refresh = now >= next_refresh_;
  if (refresh) next_refresh_ = now + kRefreshPeriod;
  ProposeCheckpoint(refresh);
  // Expiry scans every lease: once a tick, not on every wake-up. A token
  // bucket at etcd's rate, bursts of at most half a second's.
  if (now - last_revoke_ < kTick) return;
  const double rate = kRevokesPerSecond;
  revoke_tokens_ =
      std::min(rate / 2, revoke_tokens_ +
                             rate * absl::ToDoubleSeconds(now - last_revoke_));
  last_revoke_ = now;
  if (revoke_tokens_ >= 1) {
    revoke_tokens_ -= static_cast<double>(
        ProposeRevokes(static_cast<size_t>(revoke_tokens_)));
  }
}

void LeaseDriver::ProposeCheckpoint(bool refresh) {
  uint64_t seq = 0;
  internal::Request req;
  if (!lessor_->TakeCheckpoint(refresh, &seq, req.mutable_lease_checkpoint())) {
    return;
  }
  const uint64_t id = NextId();
  req.set_version(1);
  req.set_origin_member(config_->member_id);
  req.set_id(id);
  in_flight_seq_ = seq;
  in_flight_id_ = id;
  in_flight_deadline_ = MonotonicNow() + kCheckpointTimeout;
  // Runs on the apply thread: settles the lessor's batch and wakes us for
  // the next one.
  state_machine_->Register(id, [this, seq](ApplyResult r) {
    lessor_->CheckpointDone(seq, r.status.ok());
    Kick();
  });
  absl::Status s = node_->Propose(req.SerializeAsString(),
                                  MonotonicNow() + absl::Seconds(1));
  if (!s.ok()) {
    state_machine_->Cancel(id);
    lessor_->CheckpointDone(seq, false);
    in_flight_seq_ = 0;
  }
}

size_t LeaseDriver::ProposeRevokes(size_t max) {
  std::vector<int64_t> expired = lessor_->TakeExpired(max);
  for (int64_t lease_id : expired) {
    internal::Request req;
    req.set_version(1);
    req.set_origin_member(config_->member_id);
    req.set_id(NextId());
    req.mutable_lease_revoke()->set_id(lease_id);
    // Nobody waits for the result; a revoke that fails to commit is
    // proposed again after the lessor's retry interval.
    absl::Status s = node_->Propose(req.SerializeAsString(),
                                    MonotonicNow() + absl::Seconds(1));
    if (!s.ok()) {
      Logf(LogLevel::kWarning, "lease", "proposing expiry of lease %x: %s",
           lease_id, std::string(s.message()));
      break;
    }
  }
  return expired.size();
}

// ---------------------------------------------------------------------------
// LeaseService

LeaseService::LeaseService(const ServerConfig* config, raft::RaftNode* node,
                           kv::MvccStore* store, KvService* kv,
                           kv::Lessor* lessor, LeaseDriver* driver)
    : config_(config),
      node_(node),
      store_(store),
      kv_(kv),
      lessor_(lessor),
      driver_(driver) {
  // etcd's idutil.Generator: 2 bytes of member id, 5 bytes of
  // milliseconds, 1 byte of counter.
  const uint64_t ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
  id_suffix_ = (ms & ((uint64_t{1} << 40) - 1)) << 8;
}

int64_t LeaseService::NextLeaseId() {
  constexpr int kSuffixBits = 48;
  while (true) {
    const uint64_t suffix =
        (id_suffix_.fetch_add(1) + 1) & ((uint64_t{1} << kSuffixBits) - 1);
    const uint64_t id = ((config_->member_id & 0xffff) << kSuffixBits) | suffix;
    // Only positive ids, as etcd.
    const int64_t positive =
        static_cast<int64_t>(id & ((uint64_t{1} << 63) - 1));
    if (positive != 0) return positive;
  }
}

void LeaseService::FillHeader(etcdserverpb::ResponseHeader* h) const {
  h->set_cluster_id(config_->cluster_id);
  h->set_member_id(config_->member_id);
  h->set_raft_term(node_->term());
  if (h->revision() == 0) h->set_revision(store_->revision());
}

grpc::Status LeaseService::LeaseGrant(
    grpc::ServerContext* ctx, const etcdserverpb::LeaseGrantRequest* req,
    etcdserverpb::LeaseGrantResponse* resp) {
  absl::StatusOr<int64_t> ttl = lessor_->GrantTtl(req->ttl());
  if (!ttl.ok()) return ToGrpc(ttl.status());
  internal::Request r;
  etcdserverpb::LeaseGrantRequest* grant = r.mutable_lease_grant();
  grant->set_id(req->id() != 0 ? req->id() : NextLeaseId());
  grant->set_ttl(*ttl);
  if (std::optional<grpc::Status> st = kv_->WriteFast(
          ctx, [&r](internal::Request* out) { *out = r; }, resp,
          &ApplyResult::lease_grant);
      st.has_value()) {
    return *st;
  }
  ApplyResult result;
  etcdserverpb::LeaseGrantRequest forwarded = *grant;
  grpc::Status st =
      kv_->Replicate(ctx, std::move(r), &result,
                     [&](const std::shared_ptr<grpc::Channel>& channel,
                         grpc::ClientContext* c) {
                       return etcdserverpb::Lease::NewStub(channel)->LeaseGrant(
                           c, forwarded, resp);
                     });
  if (!st.ok()) return st;
  if (!resp->has_header()) *resp = std::move(result.lease_grant);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status LeaseService::LeaseRevoke(
    grpc::ServerContext* ctx, const etcdserverpb::LeaseRevokeRequest* req,
    etcdserverpb::LeaseRevokeResponse* resp) {
  internal::Request r;
  *r.mutable_lease_revoke() = *req;
  if (std::optional<grpc::Status> st = kv_->WriteFast(
          ctx, [&r](internal::Request* out) { *out = r; }, resp,
          &ApplyResult::lease_revoke);
      st.has_value()) {
    return *st;
  }
  ApplyResult result;
  grpc::Status st = kv_->Replicate(
      ctx, std::move(r), &result,
      [&](const std::shared_ptr<grpc::Channel>& channel,
          grpc::ClientContext* c) {
        return etcdserverpb::Lease::NewStub(channel)->LeaseRevoke(c, *req,
                                                                  resp);
      });
  if (!st.ok()) return st;
  if (!resp->has_header()) *resp = std::move(result.lease_revoke);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

// One LeaseKeepAlive stream on gRPC's callback API (no thread waits per
// stream). On the leader it serves: each request renews the lease in the
// lessor and is answered before the next is read (a renewal the lease's
// record does not cover yet waits for the next checkpoint on the worker
// pool). On a follower it relays: a client stream of the same call to the
// leader's peer port carries the requests up and the answers back; when the
// leader's side ends (it lost leadership, or died), the client's ends with
// "leader changed" or "no leader", and the client reconnects to whoever
// leads now, as with etcd.
//
// Lifetime: every operation is started under mu_ and only while the stream
// is not ending; the relayed call is held open (AddHold) until the stream
// ends, so its OnDone cannot overtake an operation being started on it.
// Finish is called once, when nothing this object started is still running
// (a write, a task on the pool, the relayed call), so OnDone, which deletes
// it, never races with its own callbacks.
class KeepAliveStream final
    : public grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                                     etcdserverpb::LeaseKeepAliveResponse> {
 public:
  KeepAliveStream(LeaseService* service, grpc::CallbackServerContext* ctx)
      : service_(service), ctx_(ctx) {
    service_->RegisterKeepAlive(this);
    {
      absl::MutexLock lock(&mu_);
      ++tasks_;
    }
    if (service_->node_->leader() != 0) {
      Begin();
      TaskDone();
      return;
    }
    // An election is under way: wait for it off gRPC's threads.
    const bool queued = service_->slow_.Submit([this] {
      (void)service_->node_->WaitForLeader(RequestDeadline(ctx_));
      Begin();
      TaskDone();
    });
    if (!queued) {
      End(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       "etcdserver: too many requests"));
      TaskDone();
    }
  }

  // Ends the stream with `status` (the first one given wins) once nothing
  // is in flight. Thread-safe.
  void End(const grpc::Status& status) {
    bool release = false;
    {
      absl::MutexLock lock(&mu_);
      if (!end_status_.has_value()) end_status_ = status;
      if (upstream_ != nullptr && !hold_released_) {
        hold_released_ = true;
        release = true;
      }
    }
    if (release) {
      upstream_->context.TryCancel();
      upstream_->RemoveHold();
    }
    MaybeFinish();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        absl::MutexLock lock(&mu_);
        if (upstream_ != nullptr && !end_status_.has_value()) {
          // Relaying: the client closed its side. The leader answers what
          // it was sent, then ends its side, and this stream ends with it:
          // every request read is answered, as etcd does before it ends a
          // half-closed stream. (No write to the leader is in flight: the
          // next request is read only after the last one went up.)
          client_done_ = true;
          upstream_->StartWritesDone();
          return;
        }
      }
      // The client closed its side or went away: as etcd, the stream ends
      // (every request read was answered: the next is read only after).
      End(grpc::Status::OK);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      if (end_status_.has_value()) return;
      if (upstream_ != nullptr) {
        upstream_->request = request_;
        upstream_->StartWrite(&upstream_->request);
        return;
      }
    }
    Serve();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (ok && !end_status_.has_value()) {
        // The answer is out: read the next request (serving), or the
        // leader's next answer (relaying; requests flow on independently).
        if (upstream_ != nullptr) {
          upstream_->StartRead(&upstream_->response);
        } else {
          StartRead(&request_);
        }
        return;
      }
    }
    End(grpc::Status::OK);
  }

  void OnDone() override {
    service_->UnregisterKeepAlive(this);
    delete this;
  }

 private:
  // The relayed call to the leader.
  struct Upstream final
      : public grpc::ClientBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                                       etcdserverpb::LeaseKeepAliveResponse> {
    explicit Upstream(KeepAliveStream* down) : down(down) {}
    void OnWriteDone(bool ok) override {
      // The request went up: take the client's next one. (A failed write
      // means the call is over: the pending read fails too.)
      if (ok) down->ReadRequest();
    }
    void OnReadDone(bool ok) override {
      if (ok) {
        down->Write(response);
        return;
      }
      // Once the client closed its side, the leader ending its side after
      // the last answer ends the stream. Otherwise the leader ended it first
      // (it lost leadership, or died): send the client to whoever leads
      // now.
      if (down->ClientDone()) {
        down->End(grpc::Status::OK);
        return;
      }
      down->End(NotLeader(down->service_->node_->leader()));
    }
    void OnDone(const grpc::Status&) override { down->UpstreamDone(); }
    KeepAliveStream* const down;
    grpc::ClientContext context;
    etcdserverpb::LeaseKeepAliveRequest request;
    etcdserverpb::LeaseKeepAliveResponse response;
  };

  // Serves or relays, depending on who leads now.
  void Begin() {
    raft::RaftNode* node = service_->node_;
    if (node->is_leader()) {
      ReadRequest();
      return;
    }
    if (Forwarded(ctx_)) {
      End(NotLeader(node->leader()));
      return;
    }
    std::shared_ptr<grpc::Channel> channel =
        service_->kv_->PeerChannel(node->leader());
    if (channel == nullptr) {
      End(NotLeader(0));
      return;
    }
    absl::MutexLock lock(&mu_);
    if (end_status_.has_value()) return;
    stub_ = etcdserverpb::Lease::NewStub(channel);
    upstream_ = std::make_unique<Upstream>(this);
    upstream_->context.AddMetadata(kForwardedKey, "1");
    stub_->async()->LeaseKeepAlive(&upstream_->context, upstream_.get());
    upstream_->AddHold();
    upstream_->StartRead(&upstream_->response);
    upstream_->StartCall();
    StartRead(&request_);
  }

  void ReadRequest() {
    absl::MutexLock lock(&mu_);
    if (!end_status_.has_value()) StartRead(&request_);
  }

  // Renews the lease of request_ and answers (leader side).
  void Serve() { Renew(/*applied_all=*/false); }

  // `applied_all`: this member has applied every entry committed before the
  // request came.
  void Renew(bool applied_all) {
    etcdserverpb::LeaseKeepAliveResponse resp;
    resp.set_id(request_.id());
    // The header is taken before renewing, as etcd does: a revoke seen
    // after it has a larger revision.
    service_->FillHeader(resp.mutable_header());
    kv::Lessor* lessor = service_->lessor_;
    absl::StatusOr<kv::Lessor::Renewal> renewal = lessor->Renew(request_.id());
    if (absl::IsUnavailable(renewal.status())) {
      // Leading, but the driver has not made the lessor primary yet.
      service_->driver_->SyncLeadership();
      renewal = lessor->Renew(request_.id());
    }
    if (!applied_all && renewal.status() == kv::ErrLeaseNotFound()) {
      // The grant may have committed without being applied here yet: the
      // member that took it answers once it has applied it, which can be
      // before this leader has. Only after a read barrier is "not found"
      // certain.
      RunTask([this] {
        absl::Status s =
            service_->node_->ReadBarrier(MonotonicNow() + kRequestTimeout);
        if (!s.ok()) {
          Answer(s, 0, etcdserverpb::LeaseKeepAliveResponse());
          return;
        }
        Renew(/*applied_all=*/true);
      });
      return;
    }
    if (!renewal.ok() || renewal->generation == 0) {
      Answer(renewal.status(), renewal.ok() ? renewal->ttl_s : 0,
             std::move(resp));
      return;
    }
    // Not covered by the lease's record yet: wait for the next one, off
    // gRPC's threads.
    service_->driver_->Kick();
    const int64_t id = request_.id();
    const kv::Lessor::Renewal r = *renewal;
    RunTask([this, lessor, id, r, resp]() mutable {
      absl::Status s =
          lessor->WaitCheckpoint(id, r, MonotonicNow() + kRequestTimeout);
      Answer(s, r.ttl_s, std::move(resp));
    });
  }

  // Runs `task` on the lease service's pool, off gRPC's threads; the stream
  // does not finish before it has run.
  void RunTask(std::function<void()> task) {
    {
      absl::MutexLock lock(&mu_);
      ++tasks_;
    }
    const bool queued = service_->slow_.Submit([this, task = std::move(task)] {
      task();
      TaskDone();
    });
    if (!queued) {
      End(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       "etcdserver: too many requests"));
      TaskDone();
    }
  }

  void Answer(const absl::Status& s, int64_t ttl_s,
              etcdserverpb::LeaseKeepAliveResponse resp) {
    if (s.ok()) {
      resp.set_ttl(ttl_s);
    } else if (s == kv::ErrLeaseNotFound()) {
      resp.set_ttl(0);  // etcd answers an unknown lease with TTL 0
    } else if (absl::IsUnavailable(s)) {
      End(NotLeader(service_->node_->leader()));
      return;
    } else {
      End(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                       "etcdserver: request timed out"));
      return;
    }
    Write(resp);
  }

  // Sends one answer to the client; one write is in flight at a time
  // (serving reads the next request only after it, relaying reads the
  // leader's next answer only after it).
  void Write(const etcdserverpb::LeaseKeepAliveResponse& resp) {
    absl::MutexLock lock(&mu_);
    if (end_status_.has_value()) return;
    writing_ = true;
    response_ = resp;
    StartWrite(&response_);
  }

  bool ClientDone() {
    absl::MutexLock lock(&mu_);
    return client_done_;
  }

  void UpstreamDone() {
    {
      absl::MutexLock lock(&mu_);
      upstream_done_ = true;
    }
    MaybeFinish();
  }

  void TaskDone() {
    {
      absl::MutexLock lock(&mu_);
      --tasks_;
    }
    MaybeFinish();
  }

  void MaybeFinish() {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || !end_status_.has_value() || writing_ || tasks_ > 0 ||
          (upstream_ != nullptr && !upstream_done_)) {
        return;
      }
      finished_ = true;
      status = *end_status_;
    }
    Finish(status);
  }

  LeaseService* const service_;
  grpc::CallbackServerContext* const ctx_;
  etcdserverpb::LeaseKeepAliveRequest request_;
  absl::Mutex mu_;
  etcdserverpb::LeaseKeepAliveResponse response_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<etcdserverpb::Lease::Stub> stub_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> end_status_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int tasks_ ABSL_GUARDED_BY(mu_) = 0;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Set once, in Begin, before the relayed call starts; then read without
  // the lock.
  std::unique_ptr<Upstream> upstream_;
  bool hold_released_ ABSL_GUARDED_BY(mu_) = false;
  bool upstream_done_ ABSL_GUARDED_BY(mu_) = false;
  // Relaying: the client closed its side, and so did this stream's call to
  // the leader.
  bool client_done_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                        etcdserverpb::LeaseKeepAliveResponse>*
LeaseService::LeaseKeepAlive(grpc::CallbackServerContext* ctx) {
  return new KeepAliveStream(this, ctx);
}

void LeaseService::RegisterKeepAlive(KeepAliveStream* s) {
  absl::MutexLock lock(&keep_alives_mu_);
  keep_alives_.insert(s);
}

namespace {
// The service whose EndKeepAlives runs on this thread (it holds the lock).
thread_local LeaseService* ending_keep_alives = nullptr;
}  // namespace

void LeaseService::UnregisterKeepAlive(KeepAliveStream* s) {
  // Finishing a stream may run its OnDone at once, on the thread that
  // finished it: inside EndKeepAlives, which holds the lock already.
  if (ending_keep_alives == this) {
    keep_alives_.erase(s);
    return;
  }
  absl::MutexLock lock(&keep_alives_mu_);
  keep_alives_.erase(s);
}

int LeaseService::EndKeepAlives(const grpc::Status& status) {
  // A stream is deleted only after OnDone, which unregisters it under the
  // lock first, so every stream in the set is alive while it is held.
  absl::MutexLock lock(&keep_alives_mu_);
  const std::vector<KeepAliveStream*> open(keep_alives_.begin(),
                                           keep_alives_.end());
  ending_keep_alives = this;
  for (KeepAliveStream* s : open) s->End(status);
  ending_keep_alives = nullptr;
  return static_cast<int>(open.size());
}

grpc::Status LeaseService::LeaseTimeToLive(
    grpc::ServerContext* ctx, const etcdserverpb::LeaseTimeToLiveRequest* req,
    etcdserverpb::LeaseTimeToLiveResponse* resp) {
  const absl::Time deadline = RequestDeadline(ctx);
  (void)node_->WaitForLeader(deadline);
  if (!node_->is_leader()) {
    // Only the leader knows how long a lease has left.
    if (Forwarded(ctx)) return NotLeader(node_->leader());
    std::shared_ptr<grpc::Channel> channel = kv_->PeerChannel(node_->leader());
    if (channel == nullptr) return NotLeader(0);
    grpc::ClientContext c;
    c.set_deadline(ToGrpcDeadline(deadline));
    c.AddMetadata(kForwardedKey, "1");
    return etcdserverpb::Lease::NewStub(channel)->LeaseTimeToLive(&c, *req,
                                                                  resp);
  }
  // A grant or revoke can have committed without being applied here yet
  // (the member that took it answers once it has applied it, which can be
  // before this leader has): answer only once every entry committed before
  // the call is applied here.
  if (absl::Status s = node_->ReadBarrier(deadline); !s.ok()) {
    return ToGrpc(s);
  }
  driver_->SyncLeadership();
  absl::StatusOr<kv::Lessor::Info> info = lessor_->TimeToLive(req->id());
  resp->set_id(req->id());
  if (info.status() == kv::ErrLeaseNotFound()) {
    // etcd answers an unknown (expired) lease with TTL -1, not an error.
    resp->set_ttl(-1);
    FillHeader(resp->mutable_header());
    return grpc::Status::OK;
  }
  if (!info.ok()) return ToGrpc(info.status());
  resp->set_ttl(info->remaining_s);
  resp->set_grantedttl(info->granted_ttl_s);
  if (req->keys()) {
    std::vector<std::string> keys;
    if (absl::Status s = store_->LeaseKeys(req->id(), &keys); !s.ok()) {
      return ToGrpc(s);
    }
    for (std::string& k : keys) resp->add_keys(std::move(k));
  }
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status LeaseService::LeaseLeases(
    grpc::ServerContext* ctx, const etcdserverpb::LeaseLeasesRequest* req,
    etcdserverpb::LeaseLeasesResponse* resp) {
  (void)ctx;
  (void)req;
  for (int64_t id : lessor_->Leases()) resp->add_leases()->set_id(id);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

}  // namespace lockd
