// etcd v3 Lease on a member, and the leader's lease driver.
//
// LeaseGrant and LeaseRevoke are log commands, proposed (or forwarded to the
// leader) through KvService::Replicate. LeaseKeepAlive and LeaseTimeToLive
// are served by the leader, whose lessor holds the expiries: a follower
// relays a keep-alive stream to the leader's peer port (one upstream stream
// per client stream; when the leader changes the relay ends with an error
// and clients reconnect, as they do with etcd), and forwards TimeToLive.
// Keep-alive streams use gRPC's callback API, so an open stream holds no
// thread, and a member without a leader ends them (EndKeepAlives).
// LeaseLeases is answered from the local replicated table, as etcd does.
//
// LeaseDriver is the one thread that makes the lessor primary while this
// member leads, proposes its checkpoints (one in flight, so keep-alives
// group-commit) and its expiry revokes (rate-limited by the lessor's
// options). See kv/lease/lessor.h for the expiry rule.
//
// Thread-safe; the referenced objects must outlive the service and driver.
#ifndef LOCKD_SERVER_LEASE_SERVICE_H_
#define LOCKD_SERVER_LEASE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "kv/lease/lessor.h"
#include "kv/mvcc/store.h"
#include "lockd/server/config.h"
#include "lockd/server/kv_service.h"
#include "lockd/server/kv_state_machine.h"
#include "lockd/server/worker_pool.h"
#include "lockd/util/timed_loop.h"
#include "raft/node/node.h"

namespace lockd {

class LeaseDriver {
 public:
  LeaseDriver(const ServerConfig* config, raft::RaftNode* node,
              KvStateMachine* state_machine, kv::Lessor* lessor);
  ~LeaseDriver();
  LeaseDriver(const LeaseDriver&) = delete;
  LeaseDriver& operator=(const LeaseDriver&) = delete;

  void Start();
  // Stops the thread; idempotent.
  void Stop();
  // Makes the lessor primary exactly while the raft node leads (callable
  // from any thread; services call it before serving leader-only calls).
  void SyncLeadership();
  // Wakes the thread now (a renewal waits for the next checkpoint).
  void Kick();

 private:
  // One round of the driver's loop (on loop_'s thread).
  void Step();
  void ProposeCheckpoint(bool refresh);
  // Proposes revokes for at most `max` expired leases; returns how many.
  size_t ProposeRevokes(size_t max);
  uint64_t NextId() { return next_id_.fetch_add(1); }

  const ServerConfig* config_;
  raft::RaftNode* node_;
  KvStateMachine* state_machine_;
  kv::Lessor* lessor_;
  std::atomic<uint64_t> next_id_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Serializes reading the node's leadership with acting on it.
  absl::Mutex sync_mu_;
  // The checkpoint in flight: its sequence, log command id, and deadline.
  // Driver thread only, as are the three below.
  uint64_t in_flight_seq_ = 0;
  uint64_t in_flight_id_ = 0;
  absl::Time in_flight_deadline_;
  absl::Time next_refresh_;
  absl::Time last_revoke_;
  double revoke_tokens_ = 0;
  // Runs Step every kTick, and at once when kicked, on the monotonic clock.
  TimedLoop loop_;
};

class KeepAliveStream;

// LeaseKeepAlive runs on gRPC's callback API (see KeepAliveStream in the
// .cc); the other methods are synchronous.
using LeaseServiceBase = etcdserverpb::Lease::WithCallbackMethod_LeaseKeepAlive<
    etcdserverpb::Lease::Service>;

class LeaseService final : public LeaseServiceBase {
 public:
  LeaseService(const ServerConfig* config, raft::RaftNode* node,
               kv::MvccStore* store, KvService* kv, kv::Lessor* lessor,
               LeaseDriver* driver);

  grpc::Status LeaseGrant(grpc::ServerContext* ctx,
                          const etcdserverpb::LeaseGrantRequest* req,
                          etcdserverpb::LeaseGrantResponse* resp) override;
  grpc::Status LeaseRevoke(grpc::ServerContext* ctx,
                           const etcdserverpb::LeaseRevokeRequest* req,
                           etcdserverpb::LeaseRevokeResponse* resp) override;
  grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                          etcdserverpb::LeaseKeepAliveResponse>*
  LeaseKeepAlive(grpc::CallbackServerContext* ctx) override;
  grpc::Status LeaseTimeToLive(
      grpc::ServerContext* ctx, const etcdserverpb::LeaseTimeToLiveRequest* req,
      etcdserverpb::LeaseTimeToLiveResponse* resp) override;
  grpc::Status LeaseLeases(grpc::ServerContext* ctx,
                           const etcdserverpb::LeaseLeasesRequest* req,
                           etcdserverpb::LeaseLeasesResponse* resp) override;

  // Ends every open keep-alive stream with `status` (require-leader: a
  // member without a leader for a while sends its clients elsewhere);
  // returns how many.
  int EndKeepAlives(const grpc::Status& status);

 private:
  void FillHeader(etcdserverpb::ResponseHeader* h) const;
  // etcd's request id generator (member id, milliseconds, counter), whose
  // values etcd also uses as server-chosen lease ids.
  int64_t NextLeaseId();
  friend class KeepAliveStream;
  void RegisterKeepAlive(KeepAliveStream* s);
  void UnregisterKeepAlive(KeepAliveStream* s);

  const ServerConfig* config_;
  raft::RaftNode* node_;
  kv::MvccStore* store_;
  KvService* kv_;
  kv::Lessor* lessor_;
  LeaseDriver* driver_;
  std::atomic<uint64_t> id_suffix_;
  absl::Mutex keep_alives_mu_;
  std::set<KeepAliveStream*> keep_alives_ ABSL_GUARDED_BY(keep_alives_mu_);
  // Declared last: destroyed first (running what is queued), so queued
  // work still finds the rest of the service. Keep-alive slow paths:
  // waiting for a leader, or for a checkpoint.
  WorkerPool slow_{"lease-slow", 16, 100000};
};

}  // namespace lockd

#endif  // LOCKD_SERVER_LEASE_SERVICE_H_
