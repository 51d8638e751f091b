#include "lockd/server/lockd_locks_service.h"

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lockd/server/lock_service.h"
#include "lockd/util/clock.h"

namespace lockd {
namespace {

constexpr char kSharedValue[] = "shared";
constexpr char kSemaphorePrefix[] = "semaphore:";
// The longest wait_timeout_ms honoured (the client's deadline still ends
// the call earlier).
constexpr int64_t kMaxWaitMs = int64_t{24} * 3600 * 1000;

grpc::Status Invalid(const char* message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

}  // namespace

grpc::Status LockdLocksService::Acquire(grpc::ServerContext* ctx,
                                        const std::string& name, int64_t lease,
                                        int64_t wait_timeout_ms,
                                        const std::string& value,
                                        const lock::Rule& rule, bool* acquired,
                                        std::string* key, uint64_t* token,
                                        etcdserverpb::ResponseHeader* header) {
  if (lease == 0) return Invalid("lockd: a lease is required");
  if (wait_timeout_ms < 0) return Invalid("lockd: wait_timeout_ms < 0");
  auto ticket = locks_->Admit(name);
  if (!ticket.ok()) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        std::string(ticket.status().message()));
  }
  Contender c;
  grpc::Status st = JoinQueue(kv_, ctx, name, lease, value, &c);
  if (!st.ok()) return st;
  lock::WaitScope scope;
  const absl::Time wait_until =
      MonotonicNow() +
      absl::Milliseconds(std::min(wait_timeout_ms, kMaxWaitMs));
  scope.deadline = wait_until;
  // Our own write reaching this member is not part of the wait.
  scope.catch_up_deadline = MonotonicNow() + absl::Seconds(7);
  // absl::InfiniteFuture() when the client set none.
  const absl::Time client_deadline = FromGrpcDeadline(ctx->deadline());
  scope.deadline = std::min(scope.deadline, client_deadline);
  scope.catch_up_deadline = std::min(scope.catch_up_deadline, client_deadline);
  scope.cancelled = [ctx] { return ctx->IsCancelled(); };
  absl::StatusOr<int64_t> owned = locks_->WaitForOwnership(
      name, c.key, c.create_revision, c.min_revision, scope, rule);
  *header = c.header;
  if (owned.ok()) {
    *acquired = true;
    *key = c.key;
    *token = static_cast<uint64_t>(c.create_revision);
    header->set_revision(std::max(*owned, c.min_revision));
    return grpc::Status::OK;
  }
  if (absl::IsNotFound(owned.status())) {
    return grpc::Status(grpc::StatusCode::UNKNOWN, "mutex: session is expired");
  }
  if (!absl::IsDeadlineExceeded(owned.status()) &&
      !absl::IsCancelled(owned.status())) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        std::string(owned.status().message()));
  }
  // Give up the place in the queue.
  etcdserverpb::TxnResponse removed;
  (void)DeleteIfCreatedAt(kv_, c.key, c.create_revision, &removed);
  if (absl::IsCancelled(owned.status())) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "context canceled");
  }
  if (client_deadline < wait_until) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "context deadline exceeded");
  }
  *acquired = false;  // the wait timeout: an answer, not an error
  if (removed.has_header()) header->set_revision(removed.header().revision());
  return grpc::Status::OK;
}

grpc::Status LockdLocksService::TryLock(grpc::ServerContext* ctx,
                                        const v1::TryLockRequest* req,
                                        v1::TryLockResponse* resp) {
  const bool shared = req->mode() == v1::SHARED;
  lock::Rule rule;
  rule.shared = shared;
  bool acquired = false;
  std::string key;
  uint64_t token = 0;
  grpc::Status st =
      Acquire(ctx, req->name(), req->lease(), req->wait_timeout_ms(),
              shared ? kSharedValue : lock::kExclusiveValue, rule, &acquired,
              &key, &token, resp->mutable_header());
  if (!st.ok()) return st;
  resp->set_acquired(acquired);
  if (acquired) {
    resp->set_key(key);
    resp->set_fencing_token(token);
    resp->set_mode(req->mode());
  }
  return grpc::Status::OK;
}

grpc::Status LockdLocksService::AcquireSemaphore(
    grpc::ServerContext* ctx, const v1::AcquireSemaphoreRequest* req,
    v1::AcquireSemaphoreResponse* resp) {
  if (req->limit() < 1) return Invalid("lockd: semaphore limit must be >= 1");
  lock::Rule rule;
  rule.slots = req->limit();
  // slots == 1 is the plain rule: the oldest key holds.
  bool acquired = false;
  std::string key;
  uint64_t token = 0;
  grpc::Status st =
      Acquire(ctx, req->name(), req->lease(), req->wait_timeout_ms(),
              absl::StrCat(kSemaphorePrefix, req->limit()), rule, &acquired,
              &key, &token, resp->mutable_header());
  if (!st.ok()) return st;
  resp->set_acquired(acquired);
  if (acquired) {
    resp->set_key(key);
    resp->set_fencing_token(token);
  }
  return grpc::Status::OK;
}

grpc::Status LockdLocksService::Release(grpc::ServerContext* ctx,
                                        const v1::ReleaseRequest* req,
                                        v1::ReleaseResponse* resp) {
  if (req->key().empty()) return Invalid("etcdserver: key is not provided");
  etcdserverpb::TxnRequest txn;
  if (req->fencing_token() != 0) {
    etcdserverpb::Compare* cmp = txn.add_compare();
    cmp->set_key(req->key());
    cmp->set_target(etcdserverpb::Compare::CREATE);
    cmp->set_result(etcdserverpb::Compare::EQUAL);
    cmp->set_create_revision(static_cast<int64_t>(req->fencing_token()));
  }
  txn.add_success()->mutable_request_delete_range()->set_key(req->key());
  etcdserverpb::TxnResponse out;
  grpc::Status st = kv_->TxnBlocking(ctx, &txn, &out);
  if (!st.ok()) return st;
  *resp->mutable_header() = out.header();
  resp->set_released(out.succeeded() && out.responses_size() == 1 &&
                     out.responses(0).response_delete_range().deleted() > 0);
  return grpc::Status::OK;
}

grpc::Status LockdLocksService::ListHolders(grpc::ServerContext* ctx,
                                            const v1::ListHoldersRequest* req,
                                            v1::ListHoldersResponse* resp) {
  const std::string prefix = lock::Prefix(req->name());
  etcdserverpb::RangeRequest range;
  range.set_key(prefix);
  range.set_range_end(lock::PrefixEnd(prefix));
  range.set_sort_target(etcdserverpb::RangeRequest::CREATE);
  range.set_sort_order(etcdserverpb::RangeRequest::ASCEND);
  etcdserverpb::RangeResponse out;
  grpc::Status st = kv_->RangeBlocking(ctx, &range, &out);
  if (!st.ok()) return st;
  *resp->mutable_header() = out.header();
  uint32_t limit = 0;
  if (out.kvs_size() > 0 &&
      absl::StartsWith(out.kvs(0).value(), kSemaphorePrefix)) {
    (void)absl::SimpleAtoi(
        out.kvs(0).value().substr(sizeof(kSemaphorePrefix) - 1), &limit);
  }
  resp->set_limit(limit);
  // The same rules WaitForOwnership applies, over the whole queue at once.
  bool exclusive_seen = false;
  for (int i = 0; i < out.kvs_size(); ++i) {
    const mvccpb::KeyValue& kv = out.kvs(i);
    const bool shared = kv.value() == kSharedValue;
    bool holds;
    if (limit > 0) {
      holds = static_cast<uint32_t>(i) < limit;
    } else if (shared) {
      holds = !exclusive_seen;
    } else {
      holds = i == 0;
    }
    if (!shared) exclusive_seen = true;
    v1::Holder* h = holds ? resp->add_holders() : resp->add_waiters();
    h->set_key(kv.key());
    h->set_lease(kv.lease());
    h->set_mode(shared ? v1::SHARED : v1::EXCLUSIVE);
    if (holds)
      h->set_fencing_token(static_cast<uint64_t>(kv.create_revision()));
  }
  return grpc::Status::OK;
}

}  // namespace lockd
