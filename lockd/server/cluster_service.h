// etcd v3 Cluster: the member table and changes to it.
//
// Changes run on the leader (other members forward the call to the leader's
// peer port, where this service runs too) through raft conf changes:
// MemberAdd adds a voter or a learner, MemberPromote turns a learner that
// has caught up into a voter, MemberRemove removes a member (moving
// leadership away first when it is the leader). Voter changes enter a joint
// configuration that the leader leaves automatically. MemberUpdate changes
// peer URLs through an ordinary log entry.
//
// With --strict-reconfig-check (the default), a change that would leave
// fewer started members than a quorum of the new voters is refused with
// etcd's "re-configuration failed due to not enough started members".
//
// Thread-safe; the referenced objects must outlive the service.
#ifndef LOCKD_SERVER_CLUSTER_SERVICE_H_
#define LOCKD_SERVER_CLUSTER_SERVICE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "lockd/server/config.h"
#include "lockd/server/forwarding.h"
#include "lockd/server/kv_service.h"
#include "lockd/server/membership.h"
#include "lockdpb/internal.grpc.pb.h"
#include "raft/node/node.h"

namespace lockd {

// Hands leadership to `target` and waits until it leads. Errors:
// kUnavailable "etcdserver: request timed out, leader transfer took too
// long", or the node's refusal.
absl::Status MoveLeadership(raft::RaftNode* node, uint64_t target,
                            absl::Time deadline);

class ClusterService final : public etcdserverpb::Cluster::Service {
 public:
  explicit ClusterService(const ServerConfig* config) : config_(config) {}
  // Must be called before the service is registered.
  void Attach(raft::RaftNode* node, KvService* kv,
              const Membership* membership) {
    node_ = node;
    kv_ = kv;
    membership_ = membership;
  }

  grpc::Status MemberAdd(grpc::ServerContext* ctx,
                         const etcdserverpb::MemberAddRequest* req,
                         etcdserverpb::MemberAddResponse* resp) override;
  grpc::Status MemberRemove(grpc::ServerContext* ctx,
                            const etcdserverpb::MemberRemoveRequest* req,
                            etcdserverpb::MemberRemoveResponse* resp) override;
  grpc::Status MemberUpdate(grpc::ServerContext* ctx,
                            const etcdserverpb::MemberUpdateRequest* req,
                            etcdserverpb::MemberUpdateResponse* resp) override;
  grpc::Status MemberList(grpc::ServerContext* ctx,
                          const etcdserverpb::MemberListRequest* req,
                          etcdserverpb::MemberListResponse* resp) override;
  grpc::Status MemberPromote(
      grpc::ServerContext* ctx, const etcdserverpb::MemberPromoteRequest* req,
      etcdserverpb::MemberPromoteResponse* resp) override;

  // Replicates a started member's name and client URLs (on the leader, or
  // forwarded to the leader's Peer service).
  grpc::Status Publish(grpc::ServerContext* ctx,
                       const etcdserverpb::Member* member,
                       etcdserverpb::MemberListResponse* resp);

 private:
  // Proposes `cc` (its context names `member`) on the leader after `check`
  // passes there, and waits until applied; `result` gets the new table.
  grpc::Status ChangeMembers(grpc::ServerContext* ctx, raft::ConfChange cc,
                             const etcdserverpb::Member& member,
                             const std::function<absl::Status()>& check,
                             ApplyResult* result,
                             const KvService::Forward& forward);
  // With the strict reconfig check on: whether enough members are started
  // (connected to the leader lately) for a configuration of `voters_after`
  // voters, not counting `leaving`. Leader only.
  absl::Status CheckStarted(size_t voters_after, uint64_t leaving);
  void FillHeader(etcdserverpb::ResponseHeader* h) const;
  // The call's answer after `st`: on success the header and, unless the
  // leader answered a forwarded call, the member table from `result`.
  template <typename Resp>
  grpc::Status Answer(const grpc::Status& st, const ApplyResult& result,
                      Resp* resp);

  const ServerConfig* config_;
  raft::RaftNode* node_ = nullptr;
  KvService* kv_ = nullptr;
  const Membership* membership_ = nullptr;
};

// The peer port's member-to-member service.
class PeerService final : public internal::Peer::WithCallbackMethod_Propose<
                              internal::Peer::Service> {
 public:
  PeerService(const ServerConfig* config, raft::RaftNode* node,
              KvStateMachine* state_machine, ClusterService* cluster)
      : config_(config),
        node_(node),
        state_machine_(state_machine),
        cluster_(cluster) {}
  grpc::Status Publish(grpc::ServerContext* ctx,
                       const etcdserverpb::Member* member,
                       etcdserverpb::MemberListResponse* resp) override {
    return cluster_->Publish(ctx, member, resp);
  }
  grpc::ServerBidiReactor<internal::ForwardedProposals, internal::ProposalAcks>*
  Propose(grpc::CallbackServerContext* ctx) override {
    return ServeForwardedProposals(node_, state_machine_,
                                   config_->max_request_bytes);
  }

 private:
  const ServerConfig* config_;
  raft::RaftNode* node_;
  KvStateMachine* state_machine_;
  ClusterService* cluster_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_CLUSTER_SERVICE_H_
