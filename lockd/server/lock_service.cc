#include "lockd/server/lock_service.h"

#include <chrono>

#include "absl/time/clock.h"
#include "lockd/util/clock.h"

namespace lockd {
namespace {

grpc::Status ResourceExhausted(const absl::Status& s) {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      std::string(s.message()));
}

}  // namespace

grpc::Status JoinQueue(KvService* kv, grpc::ServerContext* ctx,
                       const std::string& name, int64_t lease,
                       const std::string& value, Contender* out) {
  out->key = lock::OwnerKey(name, lease);
  etcdserverpb::TxnRequest txn;
  etcdserverpb::Compare* cmp = txn.add_compare();
  cmp->set_key(out->key);
  cmp->set_target(etcdserverpb::Compare::CREATE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_create_revision(0);
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(out->key);
  put->set_value(value);
  put->set_lease(lease);
  txn.add_failure()->mutable_request_range()->set_key(out->key);
  etcdserverpb::TxnResponse resp;
  grpc::Status st = kv->TxnBlocking(ctx, &txn, &resp);
  if (!st.ok()) return st;
  out->header = resp.header();
  out->min_revision = resp.header().revision();
  out->created = resp.succeeded();
  if (resp.succeeded()) {
    // The put is the txn's only write: its revision is the key's creation.
    out->create_revision = resp.header().revision();
    out->value = value;
    return grpc::Status::OK;
  }
  const etcdserverpb::RangeResponse& found = resp.responses(0).response_range();
  if (found.kvs_size() == 0) {
    // The compare saw the key and the range in the same txn did not: cannot
    // happen in one atomic txn.
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        "lockd: lock key vanished inside one txn");
  }
  out->create_revision = found.kvs(0).create_revision();
  out->value = found.kvs(0).value();
  return grpc::Status::OK;
}

grpc::Status DeleteIfCreatedAt(KvService* kv, const std::string& key,
                               int64_t create_revision,
                               etcdserverpb::TxnResponse* resp) {
  etcdserverpb::TxnRequest txn;
  etcdserverpb::Compare* cmp = txn.add_compare();
  cmp->set_key(key);
  cmp->set_target(etcdserverpb::Compare::CREATE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_create_revision(create_revision);
  txn.add_success()->mutable_request_delete_range()->set_key(key);
  // A context of our own: the client's may have ended, and the write must
  // not be marked as forwarded (KvService reads only these two things).
  grpc::ServerContext own;
  return kv->TxnBlocking(&own, &txn, resp);
}

grpc::Status WaitForTurn(KvService* kv, lock::LockManager* locks,
                         grpc::ServerContext* ctx, const std::string& name,
                         const Contender& c, const std::string& lost_message,
                         int64_t* revision) {
  lock::WaitScope scope;
  scope.deadline = FromGrpcDeadline(ctx->deadline());
  scope.cancelled = [ctx] { return ctx->IsCancelled(); };
  absl::StatusOr<int64_t> owned = locks->WaitForOwnership(
      name, c.key, c.create_revision, c.min_revision, scope);
  if (owned.ok()) {
    *revision = *owned;
    return grpc::Status::OK;
  }
  if (absl::IsNotFound(owned.status())) {
    return grpc::Status(grpc::StatusCode::UNKNOWN, lost_message);
  }
  if (absl::IsDeadlineExceeded(owned.status()) ||
      absl::IsCancelled(owned.status())) {
    etcdserverpb::TxnResponse ignored;
    (void)DeleteIfCreatedAt(kv, c.key, c.create_revision, &ignored);
    return absl::IsCancelled(owned.status())
               ? grpc::Status(grpc::StatusCode::CANCELLED, "context canceled")
               : grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                              "context deadline exceeded");
  }
  return grpc::Status(grpc::StatusCode::INTERNAL,
                      std::string(owned.status().message()));
}

grpc::Status LockService::Lock(grpc::ServerContext* ctx,
                               const v3lockpb::LockRequest* req,
                               v3lockpb::LockResponse* resp) {
  if (req->lease() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "lockd: Lock requires a lease");
  }
  auto ticket = locks_->Admit(req->name());
  if (!ticket.ok()) return ResourceExhausted(ticket.status());
  Contender c;
  grpc::Status st = JoinQueue(kv_, ctx, req->name(), req->lease(), "", &c);
  if (!st.ok()) return st;
  int64_t revision = 0;
  st = WaitForTurn(kv_, locks_, ctx, req->name(), c,
                   "mutex: session is expired", &revision);
  if (!st.ok()) return st;
  *resp->mutable_header() = c.header;
  resp->mutable_header()->set_revision(std::max(revision, c.min_revision));
  resp->set_key(c.key);
  return grpc::Status::OK;
}

grpc::Status LockService::Unlock(grpc::ServerContext* ctx,
                                 const v3lockpb::UnlockRequest* req,
                                 v3lockpb::UnlockResponse* resp) {
  etcdserverpb::DeleteRangeRequest del;
  del.set_key(req->key());
  etcdserverpb::DeleteRangeResponse out;
  grpc::Status st = kv_->DeleteRangeBlocking(ctx, &del, &out);
  if (!st.ok()) return st;
  *resp->mutable_header() = out.header();
  return grpc::Status::OK;
}

}  // namespace lockd
