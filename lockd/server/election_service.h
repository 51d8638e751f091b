// etcd v3 Election (v3electionpb) on a member, with etcd 3.4's semantics:
// a campaign is a lock whose key carries the candidate's value
// (name/<lease hex>); the leader is the oldest key under "name/".
// - Campaign waits (here, on the local store; see lock_service.h) until the
//   candidate leads, and returns its LeaderKey {name, key, rev = create
//   revision, lease}. A candidate whose key vanished while waiting fails
//   ("election: session is expired") instead of being made leader. The
//   client's deadline or cancellation resigns the candidacy, as in etcd.
// - Proclaim changes the value only while the key's create revision is still
//   leader.rev ("election: not leader" otherwise); Resign deletes the key
//   under the same condition and is not an error otherwise.
// - Leader is a linearizable read ("election: no leader" if none).
// - Observe streams the leader's key-value whenever the leader or its value
//   changes (changes between two wake-ups may be coalesced into the latest)
//   until the client cancels.
// etcd sends these errors as plain Go errors, i.e. gRPC UNKNOWN; so does
// lockd, with the same text.
//
// Thread-safe; the referenced objects must outlive the service.
#ifndef LOCKD_SERVER_ELECTION_SERVICE_H_
#define LOCKD_SERVER_ELECTION_SERVICE_H_

#include "lockd/lock/lock_manager.h"
#include "lockd/server/kv_service.h"
#include "lockd/server/require_leader.h"
#include "v3electionpb/v3election.grpc.pb.h"

namespace lockd {

class ElectionService final : public v3electionpb::Election::Service {
 public:
  // Observe streams register with `streams` (may be null), which ends them
  // when the member has had no leader for a while.
  ElectionService(KvService* kv, lock::LockManager* locks,
                  RequireLeaderStreams* streams = nullptr)
      : kv_(kv), locks_(locks), streams_(streams) {}

  grpc::Status Campaign(grpc::ServerContext* ctx,
                        const v3electionpb::CampaignRequest* req,
                        v3electionpb::CampaignResponse* resp) override;
  grpc::Status Proclaim(grpc::ServerContext* ctx,
                        const v3electionpb::ProclaimRequest* req,
                        v3electionpb::ProclaimResponse* resp) override;
  grpc::Status Leader(grpc::ServerContext* ctx,
                      const v3electionpb::LeaderRequest* req,
                      v3electionpb::LeaderResponse* resp) override;
  grpc::Status Observe(
      grpc::ServerContext* ctx, const v3electionpb::LeaderRequest* req,
      grpc::ServerWriter<v3electionpb::LeaderResponse>* writer) override;
  grpc::Status Resign(grpc::ServerContext* ctx,
                      const v3electionpb::ResignRequest* req,
                      v3electionpb::ResignResponse* resp) override;

 private:
  // Puts `value` on the leader's key if it still leads.
  grpc::Status ProclaimAs(grpc::ServerContext* ctx,
                          const v3electionpb::LeaderKey& leader,
                          const std::string& value,
                          etcdserverpb::ResponseHeader* header);

  KvService* kv_;
  lock::LockManager* locks_;
  RequireLeaderStreams* streams_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_ELECTION_SERVICE_H_
