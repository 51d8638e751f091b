// lockd's client library: the etcd v3 API over gRPC with the safety an
// operator expects: a deadline on every call, reads retried on the next
// endpoint when one is unavailable, writes retried only when no member could
// have applied them (the connection was never made, the member refused
// before proposing: "etcdserver: no leader" / "leader changed", or a member
// closing its listener turned the call away unhandled: CANCELLED), with
// jittered, bounded backoff between rounds.
//
// Endpoints: the client keeps its list in sync with the cluster's member
// list (on an interval and soon after a failed call), so a client given one
// endpoint learns the others and forgets removed members. An endpoint that
// failed recently is tried after the others. Channels send HTTP/2
// keepalive pings, so a dead member is noticed without a call hanging.
//
// Depends only on the wire protos and gRPC. Thread-safe.
#ifndef LOCKD_CLIENT_CLIENT_H_
#define LOCKD_CLIENT_CLIENT_H_

#include <grpcpp/security/credentials.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "v3electionpb/v3election.pb.h"

namespace lockd::client {

class Watcher;  // below, in "Watches"

// TLS as etcdctl's --cacert, --cert and --key give it: PEM file paths.
struct TlsOptions {
  std::string ca_file;    // verifies the server; empty: the system's roots
  std::string cert_file;  // with key_file: the client certificate
  std::string key_file;
  bool empty() const {
    return ca_file.empty() && cert_file.empty() && key_file.empty();
  }
};

// "127.0.0.1:2379", "http://127.0.0.1:2379" or "https://127.0.0.1:2379/"
// as "127.0.0.1:2379". Errors: kInvalidArgument (unix sockets, no port).
absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint);

// Whether a client with `tls` dials `endpoints` over TLS, as etcdctl
// decides: when a TLS file is given or an endpoint is https://.
bool UsesTls(const TlsOptions& tls, const std::vector<std::string>& endpoints);

// The channel credentials for `endpoints`: TLS (UsesTls) with the files of
// `tls` read now, else insecure. Errors: kInvalidArgument naming the flag's
// file ("cannot read --cacert ca.crt: ..."); --cert without --key.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const TlsOptions& tls, const std::vector<std::string>& endpoints);

struct ClientOptions {
  // "host:port" or "http://host:port", at least one.
  std::vector<std::string> endpoints;
  absl::Duration dial_timeout = absl::Seconds(2);
  // Deadline of each call, retries included.
  absl::Duration call_timeout = absl::Seconds(5);
  // How often the endpoint list is refreshed from MemberList; zero turns
  // syncing off (lockctl, which addresses the endpoints it was given). A
  // failed call asks for a refresh sooner (at most once a second).
  absl::Duration auto_sync_interval = absl::Seconds(30);
  // An endpoint whose call failed within this long is tried last.
  absl::Duration failure_memory = absl::Seconds(5);
  // Backoff between rounds over all endpoints: doubles from `backoff_min`
  // up to `backoff_max`, each pause jittered by +-50%; the call deadline
  // bounds the total.
  absl::Duration backoff_min = absl::Milliseconds(50);
  absl::Duration backoff_max = absl::Seconds(1);
  // TLS files; see UsesTls for when TLS is on.
  TlsOptions tls;
  // HTTP/2 keepalive pings on every channel.
  absl::Duration keepalive_time = absl::Seconds(10);
  absl::Duration keepalive_timeout = absl::Seconds(5);
};

// Locks and elections: a lock held through the v3lock Lock RPC. `token` is
// the fencing token: the lock key's create revision, which only grows from
// one holder of a lock to the next.
struct HeldLock {
  std::string name;
  std::string key;
  int64_t token = 0;
  int64_t lease = 0;
  // The revision at which the server saw this key become the holder.
  int64_t granted_revision = 0;
};

// gRPC errors come back as absl::Status with the same code and message
// (etcd's wording), e.g. kOutOfRange "etcdserver: mvcc: required revision
// has been compacted".
class Client {
 public:
  // Errors: kInvalidArgument for an empty or malformed endpoint list.
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      const ClientOptions& options);
  // Waits for a sync in progress to end (bounded by call_timeout).
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
  // Linearizable by default: a member that lags behind could otherwise
  // answer with a membership that has already changed.
  absl::StatusOr<etcdserverpb::MemberListResponse> MemberList(
      bool linearizable = true);
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

  // etcd's Alarm (GET, ACTIVATE or DEACTIVATE), on any member.
  absl::StatusOr<etcdserverpb::AlarmResponse> Alarm(
      const etcdserverpb::AlarmRequest& req);

  // Per endpoint (index into endpoints()), no retry elsewhere.
  absl::StatusOr<etcdserverpb::StatusResponse> Status(size_t endpoint);
  // HashKV at `revision` (0: the member's current one).
  absl::StatusOr<etcdserverpb::HashKVResponse> HashKV(size_t endpoint,
                                                      int64_t revision);
  // Defragment, with no deadline beyond the dial timeout (it may take a
  // while on a large store).
  absl::Status Defragment(size_t endpoint);
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

  // The endpoints given in the options (normalized); the indexed calls
  // above (Status, Health, MoveLeader, Snapshot) address these. Fixed for
  // the client's life.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // The endpoints calls are balanced over now: the given ones until the
  // first sync, then the started voting members' client URLs, in the order
  // the next call would try them.
  std::vector<std::string> current_endpoints() const;
  // Refreshes the endpoint list from MemberList now. Errors: those of
  // MemberList; kFailedPrecondition when the list names no client URL
  // (then the current list is kept).
  absl::Status Sync();

  // Watches
  //
  // Watches `req.key()` (with `range_end` as etcd: a single key, a range,
  // a prefix, or all keys from `key` with "\0") from `req.start_revision()`
  // (0: from the next revision) and calls `on_events` with every response
  // that carries events, on the watcher's own thread, one at a time, in
  // revision order. All events of one revision arrive in one call. When the
  // stream fails or a member ends it ("etcdserver: no leader", a removed
  // member, a connection drop, a cancel by the member), the watch is
  // created again on the healthiest endpoint from the last delivered
  // revision + 1: no event is skipped and none is delivered twice.
  // `on_events` returns false to end the watch (then Wait() gives OK).
  // `req.watch_id()` and `req.fragment()` are ignored.
  //
  // Returns once a member has created the watch (within call_timeout), so
  // events written after Watch() returns are seen. Errors: kOutOfRange
  // "etcdserver: mvcc: required revision has been compacted" when the start
  // revision is compacted; kInvalidArgument with the member's reason when
  // it refuses the request (e.g. an empty range); kDeadlineExceeded when no
  // member created it within call_timeout. The client must outlive the
  // Watcher.
  absl::StatusOr<std::unique_ptr<Watcher>> Watch(
      const etcdserverpb::WatchCreateRequest& req,
      std::function<bool(const etcdserverpb::WatchResponse&)> on_events);

  // ---------------------------------------------------------------------
  // Locks and elections (etcd's v3lock and v3election services; the
  // implementation is in locks.cc). Every call has a deadline; a call that
  // may be repeated safely is retried on another member as the KV reads
  // are. Waiting calls (Lock, Campaign) are safe to repeat because the
  // server keys a contender by its lease ("name/<lease hex>"): a retry after
  // a lost answer finds the same key, with the same place in the queue.
  // (One caveat: if the first member is alive but the connection to it
  // broke, that member removes the waiter's key once it notices, which can
  // be after the retry was granted. Holding is therefore never assumed:
  // writes go through GuardedTxn, which says "lock lost" then.)

  // Waits up to `wait` until `lease` holds the lock `name`, and returns the
  // lock key with its fencing token. Errors: kUnknown "mutex: session is
  // expired" when the lease ended while waiting (the lock is never granted
  // then); kDeadlineExceeded (the server removes the waiter);
  // kFailedPrecondition "lock lost" if the lease ended between the grant
  // and reading the token; the Range errors if the token cannot be read
  // (the granted key is then deleted, best effort); kInvalidArgument for
  // lease 0.
  absl::StatusOr<HeldLock> Lock(const std::string& name, int64_t lease,
                                absl::Duration wait);
  // Releases `held` if its key still carries its token (a later holder's
  // key is never deleted). OK if it was already gone.
  absl::Status Unlock(const HeldLock& held);

  // The guarded write: runs `txn` (its compares, then its success or its
  // failure ops) only while the key `key` still exists with create revision
  // `token`, that is, while the caller still holds the lock or leads the
  // election, checked in the same atomic txn as the writes. Returns `txn`'s
  // own response (the header is the outer txn's). Errors:
  // kFailedPrecondition "lock lost: ..." when the key is gone or was
  // re-created (nothing of `txn` ran); the Txn errors otherwise. Not
  // retried once a member may have applied it (kUnavailable then means the
  // outcome is unknown).
  absl::StatusOr<etcdserverpb::TxnResponse> GuardedTxn(
      const std::string& key, int64_t token,
      const etcdserverpb::TxnRequest& txn);
  absl::StatusOr<etcdserverpb::TxnResponse> GuardedTxn(
      const HeldLock& held, const etcdserverpb::TxnRequest& txn) {
    return GuardedTxn(held.key, held.token, txn);
  }

  // Election `name`: waits up to `wait` until `lease` leads, with `value`
  // proclaimed. The returned key's `rev` is the leader's fencing token.
  // Errors: kUnknown "election: session is expired"; kDeadlineExceeded.
  absl::StatusOr<v3electionpb::LeaderKey> Campaign(const std::string& name,
                                                   int64_t lease,
                                                   const std::string& value,
                                                   absl::Duration wait);
  // Errors: kUnknown "election: not leader" when `leader` no longer leads.
  absl::Status Proclaim(const v3electionpb::LeaderKey& leader,
                        const std::string& value);
  // Steps down; OK if `leader` was not leading any more.
  absl::Status Resign(const v3electionpb::LeaderKey& leader);
  // The current leader's key and value. Errors: kUnknown "election: no
  // leader".
  absl::StatusOr<mvccpb::KeyValue> Leader(const std::string& name);

 private:
  // WithRetry with an explicit deadline, on a channel (for the services
  // whose stubs live in locks.cc, and for calls that wait).
  absl::Status RetryUntil(
      absl::Time deadline, bool idempotent,
      const std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&,
                                       grpc::ClientContext*)>& call);
  // End of the locks and elections block.

 private:
  struct Endpoint;
  // Watches: watch.cc does not see Endpoint's definition.
  friend class Watcher;
  static const std::string& AddressOf(const Endpoint& ep);
  static std::shared_ptr<grpc::Channel> ChannelOf(const Endpoint& ep);
  explicit Client(const ClientOptions& options);
  std::shared_ptr<Endpoint> Dial(const std::string& address) const;
  // The current endpoints in trying order: the last one that worked first,
  // then the others, those that failed within failure_memory last.
  std::vector<std::shared_ptr<Endpoint>> Ordered() const;
  void MarkFailed(Endpoint& ep);
  void RequestSync();
  void SyncLoop();
  // Runs `call` on endpoints in turn, in Ordered() order, until it
  // succeeds, fails with a non-retryable error, or the deadline passes;
  // pauses with jittered backoff after each full round. `idempotent`
  // allows a retry after the request may have been delivered.
  template <typename Call>
  absl::Status WithRetry(bool idempotent, Call&& call);
  template <typename Call>
  absl::Status WithRetryUntil(absl::Time deadline, bool idempotent,
                              Call&& call);
  absl::Duration Jittered(absl::Duration d);
  // Waits up to the dial timeout for `endpoint`'s channel (for calls with no
  // deadline of their own). Errors: kUnavailable saying what to check.
  absl::Status WaitConnected(size_t endpoint);

  ClientOptions options_;
  // Every channel's: TLS or insecure, for all endpoints alike (a sync keeps
  // only member URLs of the matching scheme).
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  bool tls_ = false;
  std::vector<std::string> endpoints_;
  // Configured endpoints, by index; never changes after Create.
  std::vector<std::shared_ptr<Endpoint>> conns_;

  mutable absl::Mutex mu_;
  // Shared with calls in flight, which keep an endpoint alive while a sync
  // drops it.
  std::vector<std::shared_ptr<Endpoint>> pool_ ABSL_GUARDED_BY(mu_);
  std::string preferred_ ABSL_GUARDED_BY(mu_);  // address; "" for none
  uint64_t rng_state_ ABSL_GUARDED_BY(mu_) = 0x9e3779b97f4a7c15u;
  bool sync_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sync_thread_;
};

// Watches

// One watch started by Client::Watch, re-created on another member whenever
// its stream ends. Thread-safe. Destroying it cancels the watch and waits
// for its thread (and so for a callback in progress); never destroy it
// from its own callback (return false instead).
class Watcher {
 public:
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Ends the watch; Wait() then returns OK. Idempotent.
  void Cancel();
  // Waits up to `timeout` for the watch to end and returns why: OK after
  // Cancel() or a callback that returned false; kOutOfRange (compacted) when
  // the events to resume from were compacted while no member served the
  // watch; kInvalidArgument when a member refused to re-create it;
  // kUnavailable when no member served it for `retry_timeout` (then resume
  // with a new Watch from next_revision()). kDeadlineExceeded if still
  // running.
  absl::Status Wait(absl::Duration timeout);
  // The revision the next delivered event will have at least: the last
  // delivered event's revision + 1 (or where the watch started).
  int64_t next_revision() const;
  // The endpoint the stream is on now ("" between streams).
  std::string endpoint() const;
  // Streams created so far, the first included.
  int streams() const;

  // How long the watch keeps trying to re-create its stream before it ends
  // with kUnavailable.
  static constexpr absl::Duration kRetryTimeout = absl::Seconds(60);

 private:
  friend class Client;
  Watcher(Client* client, etcdserverpb::WatchCreateRequest req,
          std::function<bool(const etcdserverpb::WatchResponse&)> on_events);
  void Run();
  // One stream on `address` until it ends; returns the watch's end status,
  // or nullopt to try again elsewhere, with `why` set and `created` telling
  // whether the member had created the watch.
  absl::optional<absl::Status> RunStream(
      const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
      absl::Status* why, bool* created);
  bool Sleep(absl::Duration d);  // false when cancelled meanwhile

  Client* const client_;
  const etcdserverpb::WatchCreateRequest req_;
  const std::function<bool(const etcdserverpb::WatchResponse&)> on_events_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool created_ ABSL_GUARDED_BY(mu_) = false;  // by some member, once
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_ ABSL_GUARDED_BY(mu_);
  // The stream in progress, for Cancel(); owned by the watcher's thread.
  grpc::ClientContext* stream_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string endpoint_ ABSL_GUARDED_BY(mu_);
  int64_t next_revision_ ABSL_GUARDED_BY(mu_) = 0;
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
};

// Normalizes "http://host:port" to "host:port". Errors: kInvalidArgument.
absl::StatusOr<std::string> NormalizeEndpoint(const std::string& endpoint);

}  // namespace lockd::client

#endif  // LOCKD_CLIENT_CLIENT_H_
