// Checks a client's KV request before it is proposed, as etcd does: a request
// that fails here is answered at once and never enters the log. All checks
// are deterministic and bounded by the request's size.
#ifndef LOCKD_KV_MVCC_VALIDATE_H_
#define LOCKD_KV_MVCC_VALIDATE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "etcdserverpb/rpc.pb.h"

namespace lockd::kv {

absl::Status ValidateRange(const etcdserverpb::RangeRequest& req);
absl::Status ValidatePut(const etcdserverpb::PutRequest& req);
absl::Status ValidateDeleteRange(const etcdserverpb::DeleteRangeRequest& req);
// `max_txn_ops` bounds compares and each branch, nested txns included; no
// key may be written twice on any path through the txn.
absl::Status ValidateTxn(const etcdserverpb::TxnRequest& req,
                         int64_t max_txn_ops);

}  // namespace lockd::kv

#endif  // LOCKD_KV_MVCC_VALIDATE_H_
