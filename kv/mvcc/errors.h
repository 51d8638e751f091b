// The errors the key-value state machine returns, with etcd's wording and the
// gRPC codes etcd uses (absl and gRPC status codes share numbers), so the
// server can pass them to clients as they are.
#ifndef LOCKD_KV_MVCC_ERRORS_H_
#define LOCKD_KV_MVCC_ERRORS_H_

#include "absl/status/status.h"

namespace lockd::kv {

inline absl::Status ErrEmptyKey() {
  return absl::InvalidArgumentError("etcdserver: key is not provided");
}
inline absl::Status ErrKeyNotFound() {
  return absl::InvalidArgumentError("etcdserver: key not found");
}
inline absl::Status ErrValueProvided() {
  return absl::InvalidArgumentError("etcdserver: value is provided");
}
inline absl::Status ErrLeaseProvided() {
  return absl::InvalidArgumentError("etcdserver: lease is provided");
}
inline absl::Status ErrTooManyOps() {
  return absl::InvalidArgumentError(
      "etcdserver: too many operations in txn request");
}
inline absl::Status ErrDuplicateKey() {
  return absl::InvalidArgumentError(
      "etcdserver: duplicate key given in txn request");
}
inline absl::Status ErrCompacted() {
  return absl::OutOfRangeError(
      "etcdserver: mvcc: required revision has been compacted");
}
inline absl::Status ErrFutureRev() {
  return absl::OutOfRangeError(
      "etcdserver: mvcc: required revision is a future revision");
}
inline absl::Status ErrLeaseNotFound() {
  return absl::NotFoundError("etcdserver: requested lease not found");
}
// While the CORRUPT alarm is raised (members' data differ): no writes.
inline absl::Status ErrCorrupt() {
  return absl::DataLossError("etcdserver: corrupt cluster");
}
inline absl::Status ErrNoSpace() {
  return absl::ResourceExhaustedError(
      "etcdserver: mvcc: database space exceeded");
}

}  // namespace lockd::kv

#endif  // LOCKD_KV_MVCC_ERRORS_H_
