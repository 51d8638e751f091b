#include "lockd/client/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "lockd/util/pem_file.h"

namespace lockd::client {

struct Client::Endpoint {
  std::string address;  // "host:port"
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
  std::unique_ptr<etcdserverpb::Cluster::Stub> cluster;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  // absl::ToUnixNanos of the last failed call; 0 for never.
  std::atomic<int64_t> failed_at_ns{0};
};

bool UsesTls(const TlsOptions& tls, const std::vector<std::string>& endpoints) {
  if (!tls.empty()) return true;
  for (const std::string& e : endpoints) {
    if (absl::StartsWith(e, "https://")) return true;
  }
  return false;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const TlsOptions& tls, const std::vector<std::string>& endpoints) {
  if (!UsesTls(tls, endpoints)) return grpc::InsecureChannelCredentials();
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--cert and --key must be given together");
  }
  grpc::SslCredentialsOptions opts;
  if (!tls.ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile("--cacert", tls.ca_file);
    if (!ca.ok()) return ca.status();
    opts.pem_root_certs = *std::move(ca);
  }
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile("--cert", tls.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile("--key", tls.key_file);
    if (!key.ok()) return key.status();
    opts.pem_cert_chain = *std::move(cert);
    opts.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(opts);
}

absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint) {
  absl::string_view e = endpoint;
  if (!absl::ConsumePrefix(&e, "http://")) absl::ConsumePrefix(&e, "https://");
  absl::ConsumeSuffix(&e, "/");
  if (absl::StartsWith(e, "unix")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "endpoint ", endpoint, ": only http and https are supported"));
  }
  size_t colon = e.rfind(':');
  if (e.empty() || colon == absl::string_view::npos || colon + 1 == e.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "endpoint \"", endpoint, "\" should look like 127.0.0.1:2379"));
  }
  return std::string(e);
}

std::shared_ptr<Client::Endpoint> Client::Dial(
    const std::string& address) const {
  grpc::ChannelArguments args;
  // Notice a dead member within seconds, as a long-lived client must; the
  // server allows pings without calls (lockd/server/server.cc).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
              absl::ToInt64Milliseconds(options_.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              absl::ToInt64Milliseconds(options_.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnect to a restarted member quickly, but not in a tight loop.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(INT32_MAX);
  auto ep = std::make_shared<Endpoint>();
  ep->address = address;
  ep->channel = grpc::CreateCustomChannel(address, credentials_, args);
  ep->kv = etcdserverpb::KV::NewStub(ep->channel);
  ep->maintenance = etcdserverpb::Maintenance::NewStub(ep->channel);
  ep->cluster = etcdserverpb::Cluster::NewStub(ep->channel);
  ep->lease = etcdserverpb::Lease::NewStub(ep->channel);
  return ep;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(
    const ClientOptions& options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("no endpoints given");
  }
  if (options.call_timeout <= absl::ZeroDuration() ||
      options.dial_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "call and dial timeouts must be positive: every call has a deadline");
  }
  auto client = std::unique_ptr<Client>(new Client(options));
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentialsFor(options.tls, options.endpoints);
  if (!credentials.ok()) return credentials.status();
  client->credentials_ = *std::move(credentials);
  client->tls_ = UsesTls(options.tls, options.endpoints);
  for (const std::string& raw : options.endpoints) {
    absl::StatusOr<std::string> e = NormalizeEndpoint(raw);
    if (!e.ok()) return e.status();
    client->endpoints_.push_back(*e);
    client->conns_.push_back(client->Dial(*e));
  }
  {
    absl::MutexLock lock(&client->mu_);
    client->rng_state_ ^= static_cast<uint64_t>(absl::GetCurrentTimeNanos()) |
                          1;  // never zero: xorshift would stay at zero
    for (const auto& ep : client->conns_) {
      bool dup = false;
      for (const auto& p : client->pool_) dup |= p->address == ep->address;
      if (!dup) client->pool_.push_back(ep);
    }
  }
  if (options.auto_sync_interval > absl::ZeroDuration()) {
    Client* c = client.get();
    client->sync_thread_ = std::thread([c] { c->SyncLoop(); });
  }
  return client;
}

Client::Client(const ClientOptions& options) : options_(options) {}

Client::~Client() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (sync_thread_.joinable()) sync_thread_.join();
}

namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

// Errors after which another member may well succeed. The client never
// cancels a unary call itself, so kCancelled comes from a member shutting
// down its listener (e.g. one just removed, handing its port to its proxy);
// see RefusedBeforeProposing.
bool Retryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) ||
         absl::IsCancelled(s);
}

// lockd answers these only when it refused a write before proposing it
// (lockd/server/kv_service.cc forwards on the same rule), so a retry cannot
// apply a write twice.
// A leader handing off leadership drops proposals before appending them
// (raft/core HandlePropose) and says so with kFailedPrecondition; the
// transfer ends within an election timeout.
//
// gRPC fails a call with "failed to connect to all addresses" when the
// channel has no connection to send it on: the request never left the
// client (the member was killed between our connectivity check and the
// call).
//
// kCancelled: this client never cancels a unary call, and a gRPC server
// that shuts down its listener (a removed member handing its port to its
// proxy) fails with CANCELLED exactly the calls that had arrived but never
// reached a handler; calls it cuts off mid-way end UNAVAILABLE "Cancelling
// all calls" instead (measured with gRPC 1.51: of ~90 calls so cancelled
// over 20 shutdowns under load, none had been handled). lockd's services
// never answer CANCELLED for a call they processed.
bool RefusedBeforeProposing(const absl::Status& s) {
  return absl::IsCancelled(s) ||
         (absl::IsUnavailable(s) &&
          absl::StartsWith(s.message(),
                           "failed to connect to all addresses")) ||
         (absl::IsUnavailable(s) &&
          (s.message() == "etcdserver: no leader" ||
           s.message() == "etcdserver: leader changed")) ||
         (absl::IsFailedPrecondition(s) &&
          absl::StartsWith(s.message(), "leadership transfer to "));
}

}  // namespace

std::vector<std::shared_ptr<Client::Endpoint>> Client::Ordered() const {
  std::vector<std::shared_ptr<Endpoint>> out;
  std::string preferred;
  {
    absl::MutexLock lock(&mu_);
    out = pool_;
    preferred = preferred_;
  }
  const int64_t recent_ns =
      absl::ToUnixNanos(absl::Now() - options_.failure_memory);
  // 0: preferred and healthy, 1: healthy, 2: failed recently (oldest
  // failure first: it has had the longest to recover).
  auto rank = [&](const std::shared_ptr<Endpoint>& e) {
    const int64_t f = e->failed_at_ns.load();
    if (f != 0 && f > recent_ns) return 2;
    return e->address == preferred ? 0 : 1;
  };
  std::stable_sort(out.begin(), out.end(),
                   [&](const std::shared_ptr<Endpoint>& a,
                       const std::shared_ptr<Endpoint>& b) {
                     const int ra = rank(a), rb = rank(b);
                     if (ra != rb) return ra < rb;
                     if (ra == 2) {
                       return a->failed_at_ns.load() < b->failed_at_ns.load();
                     }
                     return false;
                   });
  return out;
}

std::vector<std::string> Client::current_endpoints() const {
  std::vector<std::string> out;
  for (const auto& e : Ordered()) out.push_back(e->address);
  return out;
}

void Client::MarkFailed(Endpoint& ep) {
  ep.failed_at_ns = absl::ToUnixNanos(absl::Now());
  absl::MutexLock lock(&mu_);
  if (preferred_ == ep.address) preferred_.clear();
}

void Client::RequestSync() {
  absl::MutexLock lock(&mu_);
  sync_requested_ = true;
}

absl::Duration Client::Jittered(absl::Duration d) {
  uint64_t x;
  {
    absl::MutexLock lock(&mu_);
    // xorshift64: cheap, and good enough to spread retries apart.
    x = rng_state_;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state_ = x;
  }
  const double factor = 0.5 + static_cast<double>(x % 1000) / 1000.0;
  return d * factor;
}

absl::Status Client::Sync() {
  absl::StatusOr<etcdserverpb::MemberListResponse> resp = MemberList(true);
  if (!resp.ok()) return resp.status();
  std::vector<std::string> addresses;
  for (const etcdserverpb::Member& m : resp->members()) {
    // A learner serves no linearizable calls; an unstarted member has not
    // published its client URLs yet.
    if (m.islearner()) continue;
    for (const std::string& url : m.clienturls()) {
      // This client's channels all speak TLS or all do not.
      if (absl::StartsWith(url, "https://") != tls_) continue;
      absl::StatusOr<std::string> a = NormalizeEndpoint(url);
      if (a.ok() && std::find(addresses.begin(), addresses.end(), *a) ==
                        addresses.end()) {
        addresses.push_back(*a);
      }
    }
  }
  if (addresses.empty()) {
    return absl::FailedPreconditionError(
        "the member list names no client URL; keeping the endpoints");
  }
  std::vector<std::shared_ptr<Endpoint>> old;
  {
    absl::MutexLock lock(&mu_);
    old = pool_;
  }
  std::vector<std::shared_ptr<Endpoint>> next;
  for (const std::string& a : addresses) {
    std::shared_ptr<Endpoint> found;
    for (const auto& e : old) {
      if (e->address == a) found = e;
    }
    for (const auto& e : conns_) {
      if (found == nullptr && e->address == a) found = e;
    }
    // Dialing is lazy in gRPC: creating a channel does no I/O.
    next.push_back(found != nullptr ? found : Dial(a));
  }
  absl::MutexLock lock(&mu_);
  pool_ = std::move(next);
  bool keep = false;
  for (const auto& e : pool_) keep |= e->address == preferred_;
  if (!keep) preferred_.clear();
  return absl::OkStatus();
}

void Client::SyncLoop() {
  auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || sync_requested_;
  };
  auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  mu_.Lock();
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&wake), options_.auto_sync_interval);
    if (stopping_) break;
    sync_requested_ = false;
    mu_.Unlock();
    // Failures are not fatal: the current list stays, and the next round
    // (or the next failed call) tries again.
    (void)Sync();
    mu_.Lock();
    // At most one sync a second, however many calls fail.
    mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Seconds(1));
  }
  mu_.Unlock();
}

template <typename Call>
absl::Status Client::WithRetry(bool idempotent, Call&& call) {
  return WithRetryUntil(absl::Now() + options_.call_timeout, idempotent,
                        std::forward<Call>(call));
}

template <typename Call>
absl::Status Client::WithRetryUntil(absl::Time deadline, bool idempotent,
                                    Call&& call) {
  absl::Status last = absl::UnavailableError("no endpoint tried");
  absl::Duration backoff = options_.backoff_min;
  while (absl::Now() < deadline) {
    const std::vector<std::shared_ptr<Endpoint>> order = Ordered();
    for (size_t k = 0; k < order.size() && absl::Now() < deadline; ++k) {
      Endpoint& ep = *order[k];
      const bool last_choice = k + 1 == order.size();
      // A member we cannot connect to never saw the request: safe to move
      // on. Don't wait for one that is failing while others remain.
      if (!last_choice &&
          ep.channel->GetState(true) == GRPC_CHANNEL_TRANSIENT_FAILURE) {
        MarkFailed(ep);
        last = absl::UnavailableError(
            absl::StrCat("cannot connect to ", ep.address));
        continue;
      }
      const absl::Time dial_by =
          std::min(deadline, absl::Now() + options_.dial_timeout);
      if (!ep.channel->WaitForConnected(absl::ToChronoTime(dial_by))) {
        MarkFailed(ep);
        RequestSync();
        last = absl::UnavailableError(absl::StrCat(
            "cannot connect to ", ep.address,
            ": check that the member is running and the endpoint is right"));
        continue;
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(deadline));
      absl::Status s = FromGrpc(call(ep, &ctx));
      if (s.ok()) {
        absl::MutexLock lock(&mu_);
        preferred_ = ep.address;
        return s;
      }
      last = s;
      if (RefusedBeforeProposing(s)) continue;  // safe for any call
      if (!Retryable(s)) return s;
      MarkFailed(ep);
      RequestSync();
      if (!idempotent) return s;
    }
    // Every endpoint failed this round: don't spin while the cluster
    // elects a leader.
    const absl::Duration pause =
        std::min(Jittered(backoff), deadline - absl::Now());
    if (pause > absl::ZeroDuration()) absl::SleepFor(pause);
    backoff = std::min(backoff * 2, options_.backoff_max);
  }
  return last;
}

absl::StatusOr<etcdserverpb::RangeResponse> Client::Range(
    const etcdserverpb::RangeRequest& req) {
  etcdserverpb::RangeResponse resp;
  absl::Status s = WithRetry(true, [&](Endpoint& ep, grpc::ClientContext* c) {
    resp.Clear();
    return ep.kv->Range(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::PutResponse> Client::Put(
    const etcdserverpb::PutRequest& req) {
  etcdserverpb::PutResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.kv->Put(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::DeleteRangeResponse> Client::DeleteRange(
    const etcdserverpb::DeleteRangeRequest& req) {
  etcdserverpb::DeleteRangeResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.kv->DeleteRange(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::TxnResponse> Client::Txn(
    const etcdserverpb::TxnRequest& req) {
  etcdserverpb::TxnResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.kv->Txn(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::CompactionResponse> Client::Compact(
    const etcdserverpb::CompactionRequest& req) {
  etcdserverpb::CompactionResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.kv->Compact(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::MemberListResponse> Client::MemberList(
    bool linearizable) {
  etcdserverpb::MemberListResponse resp;
  etcdserverpb::MemberListRequest req;
  req.set_linearizable(linearizable);
  absl::Status s = WithRetry(true, [&](Endpoint& ep, grpc::ClientContext* c) {
    resp.Clear();
    return ep.cluster->MemberList(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::LeaseGrantResponse> Client::LeaseGrant(
    const etcdserverpb::LeaseGrantRequest& req) {
  etcdserverpb::LeaseGrantResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.lease->LeaseGrant(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::LeaseRevokeResponse> Client::LeaseRevoke(
    const etcdserverpb::LeaseRevokeRequest& req) {
  etcdserverpb::LeaseRevokeResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.lease->LeaseRevoke(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> Client::LeaseTimeToLive(
    const etcdserverpb::LeaseTimeToLiveRequest& req) {
  etcdserverpb::LeaseTimeToLiveResponse resp;
  absl::Status s = WithRetry(true, [&](Endpoint& ep, grpc::ClientContext* c) {
    resp.Clear();
    return ep.lease->LeaseTimeToLive(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::LeaseLeasesResponse> Client::LeaseLeases() {
  etcdserverpb::LeaseLeasesResponse resp;
  absl::Status s = WithRetry(true, [&](Endpoint& ep, grpc::ClientContext* c) {
    resp.Clear();
    return ep.lease->LeaseLeases(c, etcdserverpb::LeaseLeasesRequest(), &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::Status Client::LeaseKeepAlive(
    int64_t lease_id,
    const std::function<bool(const etcdserverpb::LeaseKeepAliveResponse&)>&
        on_response) {
  // Until the first answer the TTL is unknown; the call timeout bounds it.
  absl::Duration ttl = options_.call_timeout;
  absl::Time last_renewed = absl::Now();
  absl::Status last = absl::UnavailableError("no endpoint tried");
  absl::Duration backoff = options_.backoff_min;
  for (;;) {
    if (absl::Now() - last_renewed > std::max(ttl, options_.call_timeout)) {
      return absl::UnavailableError(
          absl::StrCat("no member renewed the lease for ",
                       absl::FormatDuration(ttl), ": ", last.message()));
    }
    // The healthiest endpoint now; one whose stream just failed has moved
    // to the back.
    const std::shared_ptr<Endpoint> chosen = Ordered().front();
    Endpoint& ep = *chosen;
    if (!ep.channel->WaitForConnected(
            absl::ToChronoTime(absl::Now() + options_.dial_timeout))) {
      MarkFailed(ep);
      RequestSync();
      last = absl::UnavailableError(
          absl::StrCat("cannot connect to ", ep.address));
      continue;
    }
    grpc::ClientContext ctx;
    auto stream = ep.lease->LeaseKeepAlive(&ctx);
    // A member can keep the stream open and never answer (an etcd member
    // cut off from its leader, or removed, does): a watchdog ends the
    // stream when an answer is overdue, so the next member renews the
    // lease well before it expires.
    const absl::Duration answer_within = std::max(
        absl::Milliseconds(500), std::min(options_.call_timeout, ttl / 3));
    absl::Mutex dog_mu;
    bool dog_stop = false;
    bool overdue = false;
    absl::Time waiting_since = absl::InfiniteFuture();
    std::thread dog([&] {
      absl::MutexLock lock(&dog_mu);
      while (!dog_stop) {
        if (absl::Now() - waiting_since > answer_within) {
          overdue = true;
          ctx.TryCancel();
          return;
        }
        // Polling (bounded, every 50 ms) keeps the watchdog simple.
        dog_mu.AwaitWithTimeout(absl::Condition(&dog_stop),
                                absl::Milliseconds(50));
      }
    });
    struct StopDog {
      absl::Mutex* mu;
      bool* stop;
      std::thread* dog;
      ~StopDog() {
        {
          absl::MutexLock lock(mu);
          *stop = true;
        }
        dog->join();
      }
    } stop_dog{&dog_mu, &dog_stop, &dog};
    auto waiting = [&](bool on) {
      absl::MutexLock lock(&dog_mu);
      waiting_since = on ? absl::Now() : absl::InfiniteFuture();
    };
    etcdserverpb::LeaseKeepAliveRequest req;
    req.set_id(lease_id);
    etcdserverpb::LeaseKeepAliveResponse resp;
    for (;;) {
      waiting(true);
      const bool answered = stream->Write(req) && stream->Read(&resp);
      waiting(false);
      if (!answered) break;
      if (resp.ttl() <= 0) {
        ctx.TryCancel();
        (void)stream->Finish();
        return absl::NotFoundError("etcdserver: requested lease not found");
      }
      {
        absl::MutexLock lock(&mu_);
        preferred_ = ep.address;
      }
      backoff = options_.backoff_min;
      last_renewed = absl::Now();
      ttl = absl::Seconds(resp.ttl());
      if (!on_response(resp)) {
        ctx.TryCancel();
        (void)stream->Finish();
        return absl::OkStatus();
      }
      absl::SleepFor(std::max(ttl / 3, absl::Milliseconds(500)));
    }
    bool was_overdue;
    {
      absl::MutexLock lock(&dog_mu);
      was_overdue = overdue;
    }
    absl::Status finished = FromGrpc(stream->Finish());
    last = was_overdue ? absl::UnavailableError(absl::StrCat(
                             ep.address, " did not answer a keep-alive within ",
                             absl::FormatDuration(answer_within)))
                       : finished;
    MarkFailed(ep);
    RequestSync();
    // A member between leaders ends the stream; give the election a moment.
    absl::SleepFor(Jittered(backoff));
    backoff = std::min(backoff * 2, options_.backoff_max);
  }
}

absl::StatusOr<etcdserverpb::MemberAddResponse> Client::MemberAdd(
    const etcdserverpb::MemberAddRequest& req) {
  etcdserverpb::MemberAddResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.cluster->MemberAdd(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::MemberRemoveResponse> Client::MemberRemove(
    uint64_t id) {
  etcdserverpb::MemberRemoveRequest req;
  req.set_id(id);
  etcdserverpb::MemberRemoveResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.cluster->MemberRemove(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::MemberPromoteResponse> Client::MemberPromote(
    uint64_t id) {
  etcdserverpb::MemberPromoteRequest req;
  req.set_id(id);
  etcdserverpb::MemberPromoteResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.cluster->MemberPromote(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::MemberUpdateResponse> Client::MemberUpdate(
    const etcdserverpb::MemberUpdateRequest& req) {
  etcdserverpb::MemberUpdateResponse resp;
  absl::Status s = WithRetry(false, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.cluster->MemberUpdate(c, req, &resp);
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::MoveLeaderResponse> Client::MoveLeader(
    size_t endpoint, uint64_t target) {
  Endpoint& ep = *conns_.at(endpoint);
  grpc::ClientContext ctx;
  // A transfer waits for the target to catch up: up to an election timeout
  // or two beyond the usual call.
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout +
                                      absl::Seconds(10)));
  etcdserverpb::MoveLeaderRequest req;
  req.set_targetid(target);
  etcdserverpb::MoveLeaderResponse resp;
  absl::Status s = FromGrpc(ep.maintenance->MoveLeader(&ctx, req, &resp));
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::AlarmResponse> Client::Alarm(
    const etcdserverpb::AlarmRequest& req) {
  etcdserverpb::AlarmResponse resp;
  absl::Status s = WithRetry(req.action() == etcdserverpb::AlarmRequest::GET,
                             [&](Endpoint& ep, grpc::ClientContext* c) {
                               resp.Clear();
                               return ep.maintenance->Alarm(c, req, &resp);
                             });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<etcdserverpb::HashKVResponse> Client::HashKV(size_t endpoint,
                                                            int64_t revision) {
  Endpoint& ep = *conns_.at(endpoint);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
  etcdserverpb::HashKVRequest req;
  req.set_revision(revision);
  etcdserverpb::HashKVResponse resp;
  absl::Status s = FromGrpc(ep.maintenance->HashKV(&ctx, req, &resp));
  if (!s.ok()) return s;
  return resp;
}

absl::Status Client::WaitConnected(size_t endpoint) {
  Endpoint& ep = *conns_.at(endpoint);
  if (!ep.channel->WaitForConnected(
          absl::ToChronoTime(absl::Now() + options_.dial_timeout))) {
    return absl::UnavailableError(absl::StrCat(
        "cannot connect to ", endpoints_.at(endpoint),
        ": check that the member is running and the endpoint is right"));
  }
  return absl::OkStatus();
}

absl::Status Client::Defragment(size_t endpoint) {
  if (absl::Status s = WaitConnected(endpoint); !s.ok()) return s;
  Endpoint& ep = *conns_.at(endpoint);
  grpc::ClientContext ctx;
  etcdserverpb::DefragmentResponse resp;
  return FromGrpc(ep.maintenance->Defragment(
      &ctx, etcdserverpb::DefragmentRequest(), &resp));
}

absl::StatusOr<etcdserverpb::StatusResponse> Client::Status(size_t endpoint) {
  Endpoint& ep = *conns_.at(endpoint);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
  etcdserverpb::StatusResponse resp;
  absl::Status s = FromGrpc(
      ep.maintenance->Status(&ctx, etcdserverpb::StatusRequest(), &resp));
  if (!s.ok()) return s;
  return resp;
}

absl::Status Client::Snapshot(
    size_t endpoint,
    const std::function<bool(const std::string&, uint64_t)>& on_chunk) {
  if (absl::Status s = WaitConnected(endpoint); !s.ok()) return s;
  Endpoint& ep = *conns_.at(endpoint);
  grpc::ClientContext ctx;
  auto reader = ep.maintenance->Snapshot(&ctx, etcdserverpb::SnapshotRequest());
  etcdserverpb::SnapshotResponse resp;
  while (reader->Read(&resp)) {
    if (!on_chunk(resp.blob(), resp.remaining_bytes())) {
      ctx.TryCancel();
      (void)reader->Finish();
      return absl::CancelledError("snapshot download stopped");
    }
  }
  return FromGrpc(reader->Finish());
}

absl::Status Client::Health(size_t endpoint) {
  Endpoint& ep = *conns_.at(endpoint);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
  etcdserverpb::RangeRequest req;
  req.set_key("health");
  etcdserverpb::RangeResponse resp;
  return FromGrpc(ep.kv->Range(&ctx, req, &resp));
}

absl::Status Client::RetryUntil(
    absl::Time deadline, bool idempotent,
    const std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&,
                                     grpc::ClientContext*)>& call) {
  return WithRetryUntil(deadline, idempotent,
                        [&](Endpoint& ep, grpc::ClientContext* c) {
                          return call(ep.channel, c);
                        });
}

// Watches: accessors for watch.cc.
const std::string& Client::AddressOf(const Endpoint& ep) { return ep.address; }
std::shared_ptr<grpc::Channel> Client::ChannelOf(const Endpoint& ep) {
  return ep.channel;
}

}  // namespace lockd::client
