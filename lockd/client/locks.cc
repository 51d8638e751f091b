// Locks and elections in lockd's client (the "Locks and elections" block of
// client.h): etcd's v3lock and v3election services, fencing tokens, and the
// guarded write.
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lockd/client/client.h"
#include "v3electionpb/v3election.grpc.pb.h"
#include "v3lockpb/v3lock.grpc.pb.h"

namespace lockd::client {
namespace {

// A compare that holds while `key` exists with create revision `token`. A
// missing key has create revision 0, and tokens are positive, so a deleted
// key fails it too.
void AddGuard(const std::string& key, int64_t token,
              etcdserverpb::TxnRequest* txn) {
  etcdserverpb::Compare* cmp = txn->add_compare();
  cmp->set_key(key);
  cmp->set_target(etcdserverpb::Compare::CREATE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_create_revision(token);
}

absl::Status LockLost(const std::string& key, int64_t token) {
  return absl::FailedPreconditionError(
      absl::StrCat("lock lost: ", key, " is no longer held with token ", token,
                   " (its lease ended or it was released)"));
}

}  // namespace

absl::StatusOr<HeldLock> Client::Lock(const std::string& name, int64_t lease,
                                      absl::Duration wait) {
  if (lease == 0) {
    return absl::InvalidArgumentError("Lock needs a lease (lease id 0)");
  }
  v3lockpb::LockRequest req;
  req.set_name(name);
  req.set_lease(lease);
  v3lockpb::LockResponse resp;
  // Safe to repeat on another member: the contender's key is
  // "name/<lease>", so a retry finds the key the first attempt created (or
  // creates it if that attempt removed it when it gave up).
  absl::Status s = RetryUntil(
      absl::Now() + wait, true,
      [&](const std::shared_ptr<grpc::Channel>& ch, grpc::ClientContext* c) {
        resp.Clear();
        return v3lockpb::Lock::NewStub(ch)->Lock(c, req, &resp);
      });
  if (!s.ok()) return s;
  // The token is the key's create revision, which the Lock answer does not
  // carry: read it. The key is this lease's alone, so whatever create
  // revision it has now is the one that was granted, unless it is gone.
  etcdserverpb::RangeRequest range;
  range.set_key(resp.key());
  absl::StatusOr<etcdserverpb::RangeResponse> found = Range(range);
  if (!found.ok()) {
    // Granted, but the caller cannot use a lock without its token: release
    // it rather than block the others until the lease ends (best effort;
    // the key is this lease's own, so deleting it frees nobody else's).
    etcdserverpb::DeleteRangeRequest del;
    del.set_key(resp.key());
    (void)DeleteRange(del);
    return found.status();
  }
  if (found->kvs_size() == 0) return LockLost(resp.key(), 0);
  HeldLock held;
  held.name = name;
  held.key = resp.key();
  held.token = found->kvs(0).create_revision();
  held.lease = lease;
  held.granted_revision = resp.header().revision();
  return held;
}

absl::Status Client::Unlock(const HeldLock& held) {
  // Deleting only the key with our token: after our lease ended, the same
  // key name could belong to a later Lock call with this lease.
  etcdserverpb::TxnRequest txn;
  AddGuard(held.key, held.token, &txn);
  txn.add_success()->mutable_request_delete_range()->set_key(held.key);
  etcdserverpb::TxnResponse resp;
  // Repeating a guarded delete is harmless: the second finds nothing.
  return RetryUntil(
      absl::Now() + options_.call_timeout, true,
      [&](const std::shared_ptr<grpc::Channel>& ch, grpc::ClientContext* c) {
        resp.Clear();
        return etcdserverpb::KV::NewStub(ch)->Txn(c, txn, &resp);
      });
}

absl::StatusOr<etcdserverpb::TxnResponse> Client::GuardedTxn(
    const std::string& key, int64_t token,
    const etcdserverpb::TxnRequest& txn) {
  if (token <= 0) {
    return absl::InvalidArgumentError("GuardedTxn needs a positive token");
  }
  // The caller's txn nested under the guard: when the guard fails none of
  // it runs, not even its failure ops (those are writes too).
  etcdserverpb::TxnRequest outer;
  AddGuard(key, token, &outer);
  *outer.add_success()->mutable_request_txn() = txn;
  absl::StatusOr<etcdserverpb::TxnResponse> resp = Txn(outer);
  if (!resp.ok()) return resp.status();
  if (!resp->succeeded()) return LockLost(key, token);
  if (resp->responses_size() != 1 || !resp->responses(0).has_response_txn()) {
    return absl::InternalError("guarded txn: the answer has no nested txn");
  }
  etcdserverpb::TxnResponse inner = resp->responses(0).response_txn();
  *inner.mutable_header() = resp->header();
  return inner;
}

absl::StatusOr<v3electionpb::LeaderKey> Client::Campaign(
    const std::string& name, int64_t lease, const std::string& value,
    absl::Duration wait) {
  if (lease == 0) {
    return absl::InvalidArgumentError("Campaign needs a lease (lease id 0)");
  }
  v3electionpb::CampaignRequest req;
  req.set_name(name);
  req.set_lease(lease);
  req.set_value(value);
  v3electionpb::CampaignResponse resp;
  // Safe to repeat, as Lock: the candidate's key is "name/<lease>".
  absl::Status s = RetryUntil(
      absl::Now() + wait, true,
      [&](const std::shared_ptr<grpc::Channel>& ch, grpc::ClientContext* c) {
        resp.Clear();
        return v3electionpb::Election::NewStub(ch)->Campaign(c, req, &resp);
      });
  if (!s.ok()) return s;
  return resp.leader();
}

absl::Status Client::Proclaim(const v3electionpb::LeaderKey& leader,
                              const std::string& value) {
  v3electionpb::ProclaimRequest req;
  *req.mutable_leader() = leader;
  req.set_value(value);
  v3electionpb::ProclaimResponse resp;
  // Putting the same value twice under the same guard is harmless.
  return RetryUntil(
      absl::Now() + options_.call_timeout, true,
      [&](const std::shared_ptr<grpc::Channel>& ch, grpc::ClientContext* c) {
        return v3electionpb::Election::NewStub(ch)->Proclaim(c, req, &resp);
      });
}

absl::Status Client::Resign(const v3electionpb::LeaderKey& leader) {
  v3electionpb::ResignRequest req;
  *req.mutable_leader() = leader;
  v3electionpb::ResignResponse resp;
  return RetryUntil(
      absl::Now() + options_.call_timeout, true,
      [&](const std::shared_ptr<grpc::Channel>& ch, grpc::ClientContext* c) {
        return v3electionpb::Election::NewStub(ch)->Resign(c, req, &resp);
      });
}

absl::StatusOr<mvccpb::KeyValue> Client::Leader(const std::string& name) {
  v3electionpb::LeaderRequest req;
  req.set_name(name);
  v3electionpb::LeaderResponse resp;
  absl::Status s = RetryUntil(
      absl::Now() + options_.call_timeout, true,
      [&](const std::shared_ptr<grpc::Channel>& ch, grpc::ClientContext* c) {
        resp.Clear();
        return v3electionpb::Election::NewStub(ch)->Leader(c, req, &resp);
      });
  if (!s.ok()) return s;
  return resp.kv();
}

}  // namespace lockd::client
