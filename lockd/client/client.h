// lockd's client library: the etcd v3 API over gRPC with the safety an
// operator expects: a deadline on every call, reads retried on the next
// endpoint when one is unavailable, writes retried only when no member could
// have received them (the connection was never made).
//
// Depends only on the wire protos and gRPC. Thread-safe.
#ifndef LOCKD_CLIENT_CLIENT_H_
#define LOCKD_CLIENT_CLIENT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace lockd::client {

struct ClientOptions {
  // "host:port" or "http://host:port", at least one.
  std::vector<std::string> endpoints;
  absl::Duration dial_timeout = absl::Seconds(2);
  // Deadline of each call, retries included.
  absl::Duration call_timeout = absl::Seconds(5);
};

// gRPC errors come back as absl::Status with the same code and message
// (etcd's wording), e.g. kOutOfRange "etcdserver: mvcc: required revision
// has been compacted".
class Client {
 public:
  // Errors: kInvalidArgument for an empty or malformed endpoint list.
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  absl::StatusOr<etcdserverpb::RangeResponse> Range(
      const etcdserverpb::RangeRequest& req);
  absl::StatusOr<etcdserverpb::PutResponse> Put(
      const etcdserverpb::PutRequest& req);
  absl::StatusOr<etcdserverpb::DeleteRangeResponse> DeleteRange(
      const etcdserverpb::DeleteRangeRequest& req);
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(
      const etcdserverpb::TxnRequest& req);
  absl::StatusOr<etcdserverpb::CompactionResponse> Compact(
      const etcdserverpb::CompactionRequest& req);
  absl::StatusOr<etcdserverpb::MemberListResponse> MemberList();
  // Membership changes; never retried once a member may have received them.
  absl::StatusOr<etcdserverpb::MemberAddResponse> MemberAdd(
      const etcdserverpb::MemberAddRequest& req);
  absl::StatusOr<etcdserverpb::MemberRemoveResponse> MemberRemove(uint64_t id);
  absl::StatusOr<etcdserverpb::MemberPromoteResponse> MemberPromote(
      uint64_t id);
  absl::StatusOr<etcdserverpb::MemberUpdateResponse> MemberUpdate(
      const etcdserverpb::MemberUpdateRequest& req);
  // Asks the member at `endpoint` (which must be the leader) to hand
  // leadership to `target`.
  absl::StatusOr<etcdserverpb::MoveLeaderResponse> MoveLeader(size_t endpoint,
                                                              uint64_t target);

  // Leases (etcd v3 Lease). Grant and Revoke are not retried once sent.
  absl::StatusOr<etcdserverpb::LeaseGrantResponse> LeaseGrant(
      const etcdserverpb::LeaseGrantRequest& req);
  absl::StatusOr<etcdserverpb::LeaseRevokeResponse> LeaseRevoke(
      const etcdserverpb::LeaseRevokeRequest& req);
  // TTL -1 when the lease does not exist (etcd's answer).
  absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> LeaseTimeToLive(
      const etcdserverpb::LeaseTimeToLiveRequest& req);
  absl::StatusOr<etcdserverpb::LeaseLeasesResponse> LeaseLeases();
  // Keeps `lease_id` alive as etcd's client does: a keep-alive every third
  // of the TTL on one stream, moving to another endpoint when a stream
  // fails. `on_response` sees each answer and returns false to stop (then
  // OK). Errors: kNotFound "etcdserver: requested lease not found" when the
  // lease is gone (expired or revoked), kUnavailable when no member renewed
  // it for a whole TTL (it has expired by then).
  absl::Status LeaseKeepAlive(
      int64_t lease_id,
      const std::function<bool(const etcdserverpb::LeaseKeepAliveResponse&)>&
          on_response);

  // Per endpoint (index into endpoints()), no retry elsewhere.
  absl::StatusOr<etcdserverpb::StatusResponse> Status(size_t endpoint);
  // A linearizable read of key "health", as etcdctl checks health: OK when
  // the member can reach a quorum.
  absl::Status Health(size_t endpoint);

  // Streams a snapshot of the member at `endpoint`: `on_chunk` gets each
  // piece and the bytes still to come, and may return false to stop (then
  // kCancelled). No deadline beyond the dial timeout: snapshots are large.
  absl::Status Snapshot(
      size_t endpoint,
      const std::function<bool(const std::string& chunk, uint64_t remaining)>&
          on_chunk);

  const std::vector<std::string>& endpoints() const { return endpoints_; }

 private:
  struct Endpoint;
  explicit Client(const ClientOptions& options);
  // Runs `call` on endpoints in turn, starting at the preferred one, until
  // it succeeds, fails with a non-retryable error, or the deadline passes.
  // `idempotent` allows a retry after the request may have been delivered.
  template <typename Call>
  absl::Status WithRetry(bool idempotent, Call&& call);

  ClientOptions options_;
  std::vector<std::string> endpoints_;
  std::vector<std::unique_ptr<Endpoint>> conns_;
  std::atomic<size_t> preferred_{0};
};

// Normalizes "http://host:port" to "host:port". Errors: kInvalidArgument.
absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint);

}  // namespace lockd::client

#endif  // LOCKD_CLIENT_CLIENT_H_
