#include "lockd/server/lease_service.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <utility>

#include "kv/mvcc/errors.h"
#include "lockd/util/log.h"
#include "lockd/util/thread_name.h"

namespace lockd {
namespace {

constexpr char kForwardedKey[] = "lockd-forwarded";
// The longest a call waits inside the server (KvService's bound).
constexpr absl::Duration kRequestTimeout = absl::Seconds(7);
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

bool Forwarded(grpc::ServerContext* ctx) {
  return ctx->client_metadata().count(kForwardedKey) > 0;
}

grpc::Status NotLeader(uint64_t leader) {
  return grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      leader == 0 ? "etcdserver: no leader" : "etcdserver: leader changed");
}

absl::Time Deadline(grpc::ServerContext* ctx) {
  absl::Time limit = absl::Now() + kRequestTimeout;
  auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return limit;
  return std::min(limit, absl::FromChrono(d));
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
  thread_ = std::thread([this] { Run(); });
}

void LeaseDriver::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  lessor_->Demote();
}

void LeaseDriver::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

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

void LeaseDriver::Run() {
  SetThreadName("lease-driver");
  absl::Time next_refresh = absl::Now();
  absl::Time last_revoke = absl::Now();
  double revoke_tokens = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || kicked_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&woken), kTick);
      if (stop_) return;
      kicked_ = false;
    }
    SyncLeadership();
    if (!node_->is_leader()) continue;
    const absl::Time now = absl::Now();
    if (in_flight_seq_ != 0 && now > in_flight_deadline_) {
      state_machine_->Cancel(in_flight_id_);
      lessor_->CheckpointDone(in_flight_seq_, false);
      in_flight_seq_ = 0;
    }
    const bool refresh = now >= next_refresh;
    if (refresh) next_refresh = now + kRefreshPeriod;
    ProposeCheckpoint(refresh);
    // Expiry scans every lease: once a tick, not on every wake-up. A token
    // bucket at etcd's rate, bursts of at most half a second's.
    if (now - last_revoke < kTick) continue;
    const double rate = kRevokesPerSecond;
    revoke_tokens =
        std::min(rate / 2, revoke_tokens +
                               rate * absl::ToDoubleSeconds(now - last_revoke));
    last_revoke = now;
    if (revoke_tokens >= 1) {
      revoke_tokens -= static_cast<double>(
          ProposeRevokes(static_cast<size_t>(revoke_tokens)));
    }
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
  in_flight_deadline_ = absl::Now() + kCheckpointTimeout;
  // Runs on the apply thread: settles the lessor's batch and wakes us for
  // the next one.
  state_machine_->Register(id, [this, seq](ApplyResult r) {
    lessor_->CheckpointDone(seq, r.status.ok());
    Kick();
  });
  absl::Status s =
      node_->Propose(req.SerializeAsString(), absl::Now() + absl::Seconds(1));
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
    absl::Status s =
        node_->Propose(req.SerializeAsString(), absl::Now() + absl::Seconds(1));
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
                           kv::Lessor* lessor, LeaseDriver* driver,
                           RequireLeaderStreams* streams)
    : config_(config),
      node_(node),
      store_(store),
      kv_(kv),
      lessor_(lessor),
      driver_(driver),
      streams_(streams) {
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

grpc::Status LeaseService::LeaseKeepAlive(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<etcdserverpb::LeaseKeepAliveResponse,
                             etcdserverpb::LeaseKeepAliveRequest>* stream) {
  // Require-leader: ended with "no leader" if this member loses its leader
  // for long, even while waiting for the client's next request.
  RequireLeaderStreams::Registration registration(streams_, ctx);
  (void)node_->WaitForLeader(Deadline(ctx));
  if (!node_->is_leader()) {
    if (Forwarded(ctx)) return NotLeader(node_->leader());
    return RelayKeepAlive(ctx, stream);
  }
  etcdserverpb::LeaseKeepAliveRequest req;
  while (stream->Read(&req)) {
    etcdserverpb::LeaseKeepAliveResponse resp;
    resp.set_id(req.id());
    // The header is taken before renewing, as etcd does: a revoke seen
    // after it has a larger revision.
    FillHeader(resp.mutable_header());
    absl::StatusOr<kv::Lessor::Renewal> renewal = lessor_->Renew(req.id());
    if (absl::IsUnavailable(renewal.status())) {
      // Leading, but the driver has not made the lessor primary yet.
      driver_->SyncLeadership();
      renewal = lessor_->Renew(req.id());
    }
    absl::Status s = renewal.status();
    if (s.ok() && renewal->generation != 0) {
      // Not covered by the lease's record yet: wait for the next one.
      driver_->Kick();
      s = lessor_->WaitCheckpoint(req.id(), *renewal,
                                  absl::Now() + kRequestTimeout);
    }
    if (s.ok()) {
      resp.set_ttl(renewal->ttl_s);
    } else if (s == kv::ErrLeaseNotFound()) {
      resp.set_ttl(0);  // etcd answers an unknown lease with TTL 0
    } else if (absl::IsUnavailable(s)) {
      return NotLeader(node_->leader());
    } else {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: request timed out");
    }
    if (!stream->Write(resp)) break;
  }
  return grpc::Status::OK;
}

grpc::Status LeaseService::RelayKeepAlive(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<etcdserverpb::LeaseKeepAliveResponse,
                             etcdserverpb::LeaseKeepAliveRequest>* stream) {
  std::shared_ptr<grpc::Channel> channel = kv_->LeaderChannel(node_->leader());
  if (channel == nullptr) return NotLeader(0);
  grpc::ClientContext up;
  up.AddMetadata(kForwardedKey, "1");
  auto stub = etcdserverpb::Lease::NewStub(channel);
  auto upstream = stub->LeaseKeepAlive(&up);
  // Responses flow back on their own thread; when the leader's stream ends
  // (it lost leadership or died) the client's stream is ended too, so the
  // client reconnects to whoever leads now.
  std::atomic<bool> client_done{false};
  std::thread back([&] {
    etcdserverpb::LeaseKeepAliveResponse resp;
    while (upstream->Read(&resp)) {
      if (!stream->Write(resp)) break;
    }
    // The leader ended the stream first (it lost leadership, or died):
    // unblock the client's side with a status that sends it to whoever
    // leads now.
    if (!client_done.load()) {
      EndCall(ctx, grpc::StatusCode::UNAVAILABLE,
              node_->leader() == 0 ? "etcdserver: no leader"
                                   : "etcdserver: leader changed");
    }
  });
  etcdserverpb::LeaseKeepAliveRequest req;
  while (stream->Read(&req)) {
    if (!upstream->Write(req)) break;
  }
  client_done = true;
  upstream->WritesDone();
  up.TryCancel();
  back.join();
  grpc::Status st = upstream->Finish();
  if (st.error_code() == grpc::StatusCode::CANCELLED) return grpc::Status::OK;
  return st;
}

grpc::Status LeaseService::LeaseTimeToLive(
    grpc::ServerContext* ctx, const etcdserverpb::LeaseTimeToLiveRequest* req,
    etcdserverpb::LeaseTimeToLiveResponse* resp) {
  const absl::Time deadline = Deadline(ctx);
  (void)node_->WaitForLeader(deadline);
  if (!node_->is_leader()) {
    // Only the leader knows how long a lease has left.
    if (Forwarded(ctx)) return NotLeader(node_->leader());
    std::shared_ptr<grpc::Channel> channel =
        kv_->LeaderChannel(node_->leader());
    if (channel == nullptr) return NotLeader(0);
    grpc::ClientContext c;
    c.set_deadline(absl::ToChronoTime(deadline));
    c.AddMetadata(kForwardedKey, "1");
    return etcdserverpb::Lease::NewStub(channel)->LeaseTimeToLive(&c, *req,
                                                                  resp);
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
