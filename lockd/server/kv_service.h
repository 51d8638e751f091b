// etcd v3 KV on a member: reads from the local MVCC store (linearizable ones
// after a ReadIndex barrier), writes through raft. A member that is not the
// leader has the leader propose its writes over a stream to the leader's
// peer port (forwarding.h) and answers each with the leader's result or its
// own apply of the entry, whichever comes first; its slow path forwards the
// whole call to the leader's peer port, where the same service runs; a
// forwarded call is never forwarded again.
//
// Range, Put, DeleteRange and Txn use gRPC's callback API: a write is
// proposed (or sent to the leader) without blocking and answered from the
// apply thread when it commits, so no thread waits per write in flight (with
// hundreds of concurrent writes, the thread hand-offs of a blocking server cost
// more CPU than the writes). The uncommon cases (no leader yet, a leadership
// hand-over, the space quota) run the blocking path on a small worker pool.
//
// Thread-safe; the referenced objects must outlive the service.
#ifndef LOCKD_SERVER_KV_SERVICE_H_
#define LOCKD_SERVER_KV_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "kv/mvcc/store.h"
#include "lockd/server/config.h"
#include "lockd/server/forwarding.h"
#include "lockd/server/kv_state_machine.h"
#include "lockd/server/membership.h"
#include "lockd/server/worker_pool.h"
#include "lockd/util/timed_loop.h"
#include "raft/node/node.h"

namespace lockd {

// The longest a write or linearizable read waits inside the server.
inline constexpr absl::Duration kRequestTimeout = absl::Seconds(7);

// A request's deadline inside the server (on MonotonicNow's clock): its
// client's, if sooner than kRequestTimeout from now.
absl::Time RequestDeadline(grpc::ServerContextBase* ctx);

using KvServiceBase = etcdserverpb::KV::WithCallbackMethod_Range<
    etcdserverpb::KV::WithCallbackMethod_Put<
        etcdserverpb::KV::WithCallbackMethod_DeleteRange<
            etcdserverpb::KV::WithCallbackMethod_Txn<
                etcdserverpb::KV::Service>>>>;

class KvService final : public KvServiceBase {
 public:
  // `membership` tells where the leader's peer port is;
  // `peer_credentials` secure every channel to a peer port.
  KvService(const ServerConfig* config, raft::RaftNode* node,
            kv::MvccStore* store, KvStateMachine* state_machine,
            absl::Mutex* compaction_mu, const Membership* membership,
            std::shared_ptr<grpc::ChannelCredentials> peer_credentials);
  // Joins the timeout sweeper and the worker pool (running what is queued);
  // call after the gRPC servers using the service have shut down.
  ~KvService() override;

  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx,
                                  const etcdserverpb::RangeRequest* req,
                                  etcdserverpb::RangeResponse* resp) override;
  grpc::Status RangeBlocking(grpc::ServerContextBase* ctx,
                             const etcdserverpb::RangeRequest* req,
                             etcdserverpb::RangeResponse* resp);
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx,
                                const etcdserverpb::PutRequest* req,
                                etcdserverpb::PutResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteRange(
      grpc::CallbackServerContext* ctx,
      const etcdserverpb::DeleteRangeRequest* req,
      etcdserverpb::DeleteRangeResponse* resp) override;
  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext* ctx,
                                const etcdserverpb::TxnRequest* req,
                                etcdserverpb::TxnResponse* resp) override;
  // The blocking forms of the three writes: the callback API's slow path,
  // and the writes of the lock, election and lock-extension services. They
  // take the fast path first (StartWrite), then the slow one if refused.
  grpc::Status PutBlocking(grpc::ServerContextBase* ctx,
                           const etcdserverpb::PutRequest* req,
                           etcdserverpb::PutResponse* resp);
  grpc::Status DeleteRangeBlocking(grpc::ServerContextBase* ctx,
                                   const etcdserverpb::DeleteRangeRequest* req,
                                   etcdserverpb::DeleteRangeResponse* resp);
  grpc::Status TxnBlocking(grpc::ServerContextBase* ctx,
                           const etcdserverpb::TxnRequest* req,
                           etcdserverpb::TxnResponse* resp);
  grpc::Status Compact(grpc::ServerContext* ctx,
                       const etcdserverpb::CompactionRequest* req,
                       etcdserverpb::CompactionResponse* resp) override;

  // Maintenance.Alarm's replicated part (ACTIVATE, DEACTIVATE); GET is
  // answered from local state.
  grpc::Status Alarm(grpc::ServerContextBase* ctx,
                     const etcdserverpb::AlarmRequest* req,
                     etcdserverpb::AlarmResponse* resp);

  // Replicates `req` and waits for its result (on the leader), or forwards
  // the original call to the leader's peer port via `forward` (other
  // services' writes, e.g. leases and membership, take the same path).
  using Forward = std::function<grpc::Status(
      const std::shared_ptr<grpc::Channel>&, grpc::ClientContext*)>;
  grpc::Status Replicate(grpc::ServerContextBase* ctx, internal::Request req,
                         ApplyResult* result, const Forward& forward);
  // As Replicate, for anything proposed another way: on the leader,
  // `propose(id, deadline, term)` proposes an entry whose applied result
  // answers waiter `id`, to be appended only in `term` (RaftNode::Propose;
  // see KvStateMachine::Register for why); it may refuse with its own
  // error, which is returned as it is.
  using Proposer =
      std::function<absl::Status(uint64_t id, absl::Time, uint64_t term)>;
  grpc::Status ReplicateWith(grpc::ServerContextBase* ctx,
                             const Proposer& propose, ApplyResult* result,
                             const Forward& forward);
  // A write on the fast path (see StartWrite), waited for: proposed here on
  // the leader, or by the leader on this follower's behalf, bound to its
  // term. Nullopt when refused (nothing was appended, `*resp` untouched) or
  // when `ctx`'s call was forwarded here by another member: place it the
  // slow way then (Replicate). Otherwise the answer; `*resp` is filled,
  // header included, when it is OK. Used by the blocking writes and by the
  // lease service's grants and revokes.
  template <typename Resp>
  std::optional<grpc::Status> WriteFast(
      grpc::ServerContextBase* ctx,
      const std::function<void(internal::Request*)>& wrap, Resp* resp,
      Resp ApplyResult::*result_field);
  // A channel to a member's peer port (cached), or null if unknown.
  std::shared_ptr<grpc::Channel> PeerChannel(uint64_t member);

 private:
  // Runs `forward` against the leader `leader`, given up (`*leader_lost`)
  // once this member no longer follows it and it stops answering.
  grpc::Status RelayWhileLeading(const Forward& forward,
                                 const std::shared_ptr<grpc::Channel>& channel,
                                 grpc::ClientContext* fwd, uint64_t leader,
                                 bool* leader_lost);
  // Over the space quota: raises the NOSPACE alarm (once) and says so.
  bool OverQuota(grpc::ServerContextBase* ctx, size_t request_bytes);
  // True when a write of `request_bytes` fits under the quota by the cached
  // size (never blocks; OverQuota decides the rest).
  bool RoomInQuota(size_t request_bytes);
  // The write path of the callback API (see the file comment): answers
  // `validation` if it is an error; a write that `grows_store` past the
  // quota takes the blocking path; `wrap` makes the log command (proposed
  // here on the leader, or by the leader on a follower's behalf, see
  // forwarding.h), `blocking` is the whole blocking form of the method.
  template <typename Req, typename Resp>
  grpc::ServerUnaryReactor* WriteAsync(
      grpc::CallbackServerContext* ctx, const Req* req, Resp* resp,
      const absl::Status& validation, bool grows_store,
      const std::function<void(internal::Request*)>& wrap,
      Resp ApplyResult::*result_field, std::function<grpc::Status()> blocking);
  // The fast path of a write, for both APIs: proposed here on the leader,
  // or sent to the leader on the Peer.Propose stream (see forwarding.h).
  // Exactly one of the two callbacks runs, on some other thread or inline:
  // `answer` with the outcome (`*resp` filled, header included, when OK),
  // or `refused` when the write was never appended, so the caller's slow
  // path may place it again (also at once, nothing sent, when no leader is
  // known or the call was `forwarded` to this member by another).
  template <typename Resp>
  void StartWrite(absl::Time deadline, bool forwarded,
                  const std::function<void(internal::Request*)>& wrap,
                  Resp* resp, Resp ApplyResult::*result_field,
                  std::function<void(const grpc::Status&)> answer,
                  std::function<void()> refused);
  // Runs `blocking` on the worker pool and answers with its status.
  void Offload(grpc::ServerUnaryReactor* reactor,
               std::function<grpc::Status()> blocking);
  // A write's blocking path: the fast path (WriteFast) first, unless the
  // call was forwarded to this member; if refused, WriteReplicated.
  template <typename Req, typename Resp>
  grpc::Status Write(grpc::ServerContextBase* ctx, const Req& req, Resp* resp,
                     const std::function<void(internal::Request*)>& wrap,
                     Resp ApplyResult::*result_field,
                     grpc::Status (etcdserverpb::KV::Stub::*forward)(
                         grpc::ClientContext*, const Req&, Resp*));
  // The slow path: wrap the write as a log command, replicate it here on
  // the leader (or forward the whole call with `forward`), and answer from
  // the apply result's `result_field`.
  template <typename Req, typename Resp>
  grpc::Status WriteReplicated(
      grpc::ServerContextBase* ctx, const Req& req, Resp* resp,
      const std::function<void(internal::Request*)>& wrap,
      Resp ApplyResult::*result_field,
      grpc::Status (etcdserverpb::KV::Stub::*forward)(grpc::ClientContext*,
                                                      const Req&, Resp*));
  void FillHeader(etcdserverpb::ResponseHeader* h) const;

  const ServerConfig* config_;
  raft::RaftNode* node_;
  kv::MvccStore* store_;
  KvStateMachine* state_machine_;
  absl::Mutex* compaction_mu_;
  const Membership* membership_;
  std::atomic<uint64_t> next_id_;
  // Sends this follower's client writes to the leader (see WriteAsync).
  std::unique_ptr<ProposalForwarder> forwarder_;
  // The store's size as the quota check last read it, and when.
  std::atomic<uint64_t> size_bytes_{0};
  std::atomic<int64_t> size_checked_ns_{0};
  const std::shared_ptr<grpc::ChannelCredentials> peer_credentials_;
  absl::Mutex channels_mu_;
  // By peer address ("host:port").
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_
      ABSL_GUARDED_BY(channels_mu_);
  // A linearizable read waiting for its read barrier. Answered once, by
  // whichever claims it first: the barrier's callback (on the node's
  // thread), the sweeper (past the deadline) or the service's end.
  struct PendingRead {
    grpc::ServerUnaryReactor* reactor = nullptr;
    absl::Time deadline;
    std::atomic<bool> answered{false};
    bool Claim() { return !answered.exchange(true); }
  };
  // Answers the pending reads whose deadline is at or before `now`.
  void ExpireReads(absl::Time now);
  absl::Mutex reads_mu_;
  uint64_t next_read_ ABSL_GUARDED_BY(reads_mu_) = 0;
  std::map<uint64_t, std::shared_ptr<PendingRead>> pending_reads_
      ABSL_GUARDED_BY(reads_mu_);
  // Answers writes and reads whose commit or barrier did not come by their
  // deadline.
  TimedLoop sweeper_;
  // Declared last: destroyed first, so queued work still finds the rest of
  // the service. The slow paths of all calls:
  WorkerPool pool_{"kv-slow", 64, 100000};
  // Linearizable reads whose barrier passed. The node's thread hands over
  // all reads one ReadIndex confirmed at once; two threads drain them, so a
  // batch costs a wake-up or two rather than one per read.
  WorkerPool reads_{"kv-read", 2, 100000};
};

}  // namespace lockd

#endif  // LOCKD_SERVER_KV_SERVICE_H_
