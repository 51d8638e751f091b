#include "lockd/server/election_service.h"

#include <optional>

#include "lockd/server/lock_service.h"

namespace lockd {
namespace {

grpc::Status Plain(const char* message) {
  return grpc::Status(grpc::StatusCode::UNKNOWN, message);
}

constexpr char kNotLeader[] = "election: not leader";
constexpr char kNoLeader[] = "election: no leader";
constexpr char kMissingLeaderKey[] = "\"leader\" field must be provided";

// The oldest key under name/: the leader.
etcdserverpb::RangeRequest LeaderRange(const std::string& name) {
  const std::string prefix = lock::Prefix(name);
  etcdserverpb::RangeRequest range;
  range.set_key(prefix);
  range.set_range_end(lock::PrefixEnd(prefix));
  range.set_sort_target(etcdserverpb::RangeRequest::CREATE);
  range.set_sort_order(etcdserverpb::RangeRequest::ASCEND);
  range.set_limit(1);
  return range;
}

}  // namespace

grpc::Status ElectionService::ProclaimAs(grpc::ServerContext* ctx,
                                         const v3electionpb::LeaderKey& leader,
                                         const std::string& value,
                                         etcdserverpb::ResponseHeader* header) {
  etcdserverpb::TxnRequest txn;
  etcdserverpb::Compare* cmp = txn.add_compare();
  cmp->set_key(leader.key());
  cmp->set_target(etcdserverpb::Compare::CREATE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_create_revision(leader.rev());
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(leader.key());
  put->set_value(value);
  put->set_lease(leader.lease());
  etcdserverpb::TxnResponse resp;
  grpc::Status st = kv_->TxnBlocking(ctx, &txn, &resp);
  if (!st.ok()) return st;
  if (!resp.succeeded()) return Plain(kNotLeader);
  *header = resp.header();
  return grpc::Status::OK;
}

grpc::Status ElectionService::Campaign(grpc::ServerContext* ctx,
                                       const v3electionpb::CampaignRequest* req,
                                       v3electionpb::CampaignResponse* resp) {
  if (req->lease() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "lockd: Campaign requires a lease");
  }
  auto ticket = locks_->Admit(req->name());
  if (!ticket.ok()) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        std::string(ticket.status().message()));
  }
  Contender c;
  grpc::Status st =
      JoinQueue(kv_, ctx, req->name(), req->lease(), req->value(), &c);
  if (!st.ok()) return st;
  v3electionpb::LeaderKey leader;
  leader.set_name(req->name());
  leader.set_key(c.key);
  leader.set_rev(c.create_revision);
  leader.set_lease(req->lease());
  if (!c.created && c.value != req->value()) {
    // Campaigning again with a new value (as etcd's recipe does).
    etcdserverpb::ResponseHeader header;
    st = ProclaimAs(ctx, leader, req->value(), &header);
    if (!st.ok()) {
      etcdserverpb::TxnResponse ignored;
      (void)DeleteIfCreatedAt(kv_, c.key, c.create_revision, &ignored);
      return st;
    }
    c.min_revision = header.revision();
  }
  int64_t revision = 0;
  st = WaitForTurn(kv_, locks_, ctx, req->name(), c,
                   "election: session is expired", &revision);
  if (!st.ok()) return st;
  *resp->mutable_header() = c.header;
  resp->mutable_header()->set_revision(std::max(revision, c.min_revision));
  *resp->mutable_leader() = std::move(leader);
  return grpc::Status::OK;
}

grpc::Status ElectionService::Proclaim(grpc::ServerContext* ctx,
                                       const v3electionpb::ProclaimRequest* req,
                                       v3electionpb::ProclaimResponse* resp) {
  if (!req->has_leader()) return Plain(kMissingLeaderKey);
  return ProclaimAs(ctx, req->leader(), req->value(), resp->mutable_header());
}

grpc::Status ElectionService::Resign(grpc::ServerContext* ctx,
                                     const v3electionpb::ResignRequest* req,
                                     v3electionpb::ResignResponse* resp) {
  if (!req->has_leader()) return Plain(kMissingLeaderKey);
  etcdserverpb::TxnRequest txn;
  etcdserverpb::Compare* cmp = txn.add_compare();
  cmp->set_key(req->leader().key());
  cmp->set_target(etcdserverpb::Compare::CREATE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_create_revision(req->leader().rev());
  txn.add_success()->mutable_request_delete_range()->set_key(
      req->leader().key());
  etcdserverpb::TxnResponse out;
  grpc::Status st = kv_->TxnBlocking(ctx, &txn, &out);
  if (!st.ok()) return st;
  *resp->mutable_header() = out.header();
  return grpc::Status::OK;
}

grpc::Status ElectionService::Leader(grpc::ServerContext* ctx,
                                     const v3electionpb::LeaderRequest* req,
                                     v3electionpb::LeaderResponse* resp) {
  etcdserverpb::RangeRequest range = LeaderRange(req->name());
  etcdserverpb::RangeResponse out;
  grpc::Status st = kv_->RangeBlocking(ctx, &range, &out);
  if (!st.ok()) return st;
  if (out.kvs_size() == 0) return Plain(kNoLeader);
  *resp->mutable_header() = out.header();
  *resp->mutable_kv() = out.kvs(0);
  return grpc::Status::OK;
}

grpc::Status ElectionService::Observe(
    grpc::ServerContext* ctx, const v3electionpb::LeaderRequest* req,
    grpc::ServerWriter<v3electionpb::LeaderResponse>* writer) {
  // Require-leader: a member cut off from its leader ends the stream with
  // "no leader" (the cancellation below then ends this loop), so observers
  // move to a member that sees leadership change.
  RequireLeaderStreams::Registration registration(streams_, ctx);
  auto ticket = locks_->Admit(req->name());
  if (!ticket.ok()) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        std::string(ticket.status().message()));
  }
  // The first answer is a linearizable read (this also brings a lagging
  // member up to date); later ones come from local applied state.
  etcdserverpb::RangeRequest range = LeaderRange(req->name());
  etcdserverpb::RangeResponse found;
  grpc::Status st = kv_->RangeBlocking(ctx, &range, &found);
  if (!st.ok()) return st;
  const etcdserverpb::ResponseHeader header = found.header();
  int64_t revision = header.revision();
  std::optional<mvccpb::KeyValue> last;
  if (found.kvs_size() > 0) {
    v3electionpb::LeaderResponse first;
    *first.mutable_header() = header;
    *first.mutable_kv() = found.kvs(0);
    last = found.kvs(0);
    if (!writer->Write(first)) return grpc::Status::OK;
  }
  lock::WaitScope scope;
  scope.cancelled = [ctx] { return ctx->IsCancelled(); };
  while (true) {
    absl::Status s = locks_->WaitForChange(req->name(), revision, scope);
    if (absl::IsCancelled(s)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "context canceled");
    }
    if (!s.ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, std::string(s.message()));
    }
    absl::StatusOr<std::optional<mvccpb::KeyValue>> now =
        locks_->Oldest(req->name(), &revision);
    if (!now.ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          std::string(now.status().message()));
    }
    if (!now->has_value()) continue;  // no leader: wait for one
    const mvccpb::KeyValue& kv = **now;
    if (last.has_value() && last->key() == kv.key() &&
        last->mod_revision() == kv.mod_revision()) {
      continue;
    }
    v3electionpb::LeaderResponse out;
    *out.mutable_header() = header;
    out.mutable_header()->set_revision(revision);
    *out.mutable_kv() = kv;
    last = kv;
    if (!writer->Write(out)) return grpc::Status::OK;
  }
}

}  // namespace lockd
