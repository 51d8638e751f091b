#include "lockd/client/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace lockd::client {

struct Client::Endpoint {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
  std::unique_ptr<etcdserverpb::Cluster::Stub> cluster;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
};

absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint) {
  absl::string_view e = endpoint;
  absl::ConsumePrefix(&e, "http://");
  absl::ConsumeSuffix(&e, "/");
  if (absl::StartsWith(e, "https://") || absl::StartsWith(e, "unix")) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint ", endpoint, ": only http is supported"));
  }
  size_t colon = e.rfind(':');
  if (e.empty() || colon == absl::string_view::npos || colon + 1 == e.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "endpoint \"", endpoint, "\" should look like 127.0.0.1:2379"));
  }
  return std::string(e);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(
    const ClientOptions& options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("no endpoints given");
  }
  auto client = std::unique_ptr<Client>(new Client(options));
  for (const std::string& raw : options.endpoints) {
    absl::StatusOr<std::string> e = NormalizeEndpoint(raw);
    if (!e.ok()) return e.status();
    grpc::ChannelArguments args;
    // Notice a dead member within seconds, as a long-lived client must.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetMaxReceiveMessageSize(INT32_MAX);
    auto ep = std::make_unique<Endpoint>();
    ep->channel =
        grpc::CreateCustomChannel(*e, grpc::InsecureChannelCredentials(), args);
    ep->kv = etcdserverpb::KV::NewStub(ep->channel);
    ep->maintenance = etcdserverpb::Maintenance::NewStub(ep->channel);
    ep->cluster = etcdserverpb::Cluster::NewStub(ep->channel);
    ep->lease = etcdserverpb::Lease::NewStub(ep->channel);
    client->endpoints_.push_back(*e);
    client->conns_.push_back(std::move(ep));
  }
  return client;
}

Client::Client(const ClientOptions& options) : options_(options) {}
Client::~Client() = default;

namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

// Errors after which another member may well succeed.
bool Retryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s);
}

}  // namespace

template <typename Call>
absl::Status Client::WithRetry(bool idempotent, Call&& call) {
  absl::Time deadline = absl::Now() + options_.call_timeout;
  absl::Status last = absl::UnavailableError("no endpoint tried");
  size_t n = conns_.size();
  size_t start = preferred_.load();
  for (size_t attempt = 0; absl::Now() < deadline; ++attempt) {
    size_t i = (start + attempt) % n;
    Endpoint& ep = *conns_[i];
    // A member we cannot connect to never saw the request: safe to move on.
    absl::Time dial_by =
        std::min(deadline, absl::Now() + options_.dial_timeout);
    if (!ep.channel->WaitForConnected(absl::ToChronoTime(dial_by))) {
      last = absl::UnavailableError(absl::StrCat(
          "cannot connect to ", endpoints_[i],
          ": check that the member is running and the endpoint is right"));
      continue;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    absl::Status s = FromGrpc(call(ep, &ctx));
    if (s.ok()) {
      preferred_ = i;
      return s;
    }
    last = s;
    if (!Retryable(s) || !idempotent) return s;
    // Don't spin while the cluster elects a leader.
    if (attempt + 1 >= n) {
      absl::SleepFor(std::min(absl::Milliseconds(200), deadline - absl::Now()));
    }
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

absl::StatusOr<etcdserverpb::MemberListResponse> Client::MemberList() {
  etcdserverpb::MemberListResponse resp;
  absl::Status s = WithRetry(true, [&](Endpoint& ep, grpc::ClientContext* c) {
    return ep.cluster->MemberList(c, etcdserverpb::MemberListRequest(), &resp);
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
  const size_t n = conns_.size();
  for (size_t attempt = 0;; ++attempt) {
    if (absl::Now() - last_renewed > std::max(ttl, options_.call_timeout)) {
      return absl::UnavailableError(
          absl::StrCat("no member renewed the lease for ",
                       absl::FormatDuration(ttl), ": ", last.message()));
    }
    const size_t i = (preferred_.load() + attempt) % n;
    Endpoint& ep = *conns_[i];
    if (!ep.channel->WaitForConnected(
            absl::ToChronoTime(absl::Now() + options_.dial_timeout))) {
      last = absl::UnavailableError(
          absl::StrCat("cannot connect to ", endpoints_[i]));
      continue;
    }
    grpc::ClientContext ctx;
    auto stream = ep.lease->LeaseKeepAlive(&ctx);
    etcdserverpb::LeaseKeepAliveRequest req;
    req.set_id(lease_id);
    etcdserverpb::LeaseKeepAliveResponse resp;
    while (stream->Write(req) && stream->Read(&resp)) {
      if (resp.ttl() <= 0) {
        ctx.TryCancel();
        (void)stream->Finish();
        return absl::NotFoundError("etcdserver: requested lease not found");
      }
      preferred_ = i;
      last_renewed = absl::Now();
      ttl = absl::Seconds(resp.ttl());
      if (!on_response(resp)) {
        ctx.TryCancel();
        (void)stream->Finish();
        return absl::OkStatus();
      }
      absl::SleepFor(std::max(ttl / 3, absl::Milliseconds(500)));
    }
    last = FromGrpc(stream->Finish());
    // A member between leaders ends the stream; give the election a moment.
    absl::SleepFor(absl::Milliseconds(200));
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
  Endpoint& ep = *conns_.at(endpoint);
  if (!ep.channel->WaitForConnected(
          absl::ToChronoTime(absl::Now() + options_.dial_timeout))) {
    return absl::UnavailableError(absl::StrCat(
        "cannot connect to ", endpoints_[endpoint],
        ": check that the member is running and the endpoint is right"));
  }
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

}  // namespace lockd::client
