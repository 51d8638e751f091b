// etcd v3 Maintenance: status, hashes, defragmentation, snapshots, alarms and
// leadership moves.
//
// Thread-safe: the services only read the immutable ServerConfig they are
// given, which must outlive them.
#ifndef LOCKD_SERVER_SERVICES_H_
#define LOCKD_SERVER_SERVICES_H_

#include <atomic>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "kv/mvcc/store.h"
#include "lockd/server/config.h"
#include "lockd/server/kv_service.h"
#include "lockd/server/membership.h"
#include "raft/node/node.h"

namespace lockd {

// Fills the header every etcd response carries.
void FillHeader(const ServerConfig& config, etcdserverpb::ResponseHeader* h);

class MaintenanceService final : public etcdserverpb::Maintenance::Service {
 public:
  explicit MaintenanceService(const ServerConfig* config) : config_(config) {}
  // Must be called before the service is registered.
  void Attach(raft::RaftNode* node, kv::MvccStore* store, KvService* kv,
              const Membership* membership) {
    node_ = node;
    store_ = store;
    kv_ = kv;
    membership_ = membership;
  }
  grpc::Status Status(grpc::ServerContext* ctx,
                      const etcdserverpb::StatusRequest* req,
                      etcdserverpb::StatusResponse* resp) override;
  grpc::Status Hash(grpc::ServerContext* ctx,
                    const etcdserverpb::HashRequest* req,
                    etcdserverpb::HashResponse* resp) override;
  grpc::Status HashKV(grpc::ServerContext* ctx,
                      const etcdserverpb::HashKVRequest* req,
                      etcdserverpb::HashKVResponse* resp) override;
  grpc::Status Defragment(grpc::ServerContext* ctx,
                          const etcdserverpb::DefragmentRequest* req,
                          etcdserverpb::DefragmentResponse* resp) override;
  // Streams a consistent copy of the key-value state (see
  // kv/snapshot/archive.h) in chunks, remaining_bytes counting down.
  grpc::Status Snapshot(
      grpc::ServerContext* ctx, const etcdserverpb::SnapshotRequest* req,
      grpc::ServerWriter<etcdserverpb::SnapshotResponse>* writer) override;
  grpc::Status Alarm(grpc::ServerContext* ctx,
                     const etcdserverpb::AlarmRequest* req,
                     etcdserverpb::AlarmResponse* resp) override {
    return kv_->Alarm(ctx, req, resp);
  }
  grpc::Status MoveLeader(grpc::ServerContext* ctx,
                          const etcdserverpb::MoveLeaderRequest* req,
                          etcdserverpb::MoveLeaderResponse* resp) override;

 private:
  void FillFullHeader(etcdserverpb::ResponseHeader* h) const;

  const ServerConfig* config_;
  raft::RaftNode* node_ = nullptr;
  kv::MvccStore* store_ = nullptr;
  KvService* kv_ = nullptr;
  const Membership* membership_ = nullptr;
  std::atomic<int> snapshots_in_flight_{0};
  std::atomic<uint64_t> snapshot_seq_{0};
};

}  // namespace lockd

#endif  // LOCKD_SERVER_SERVICES_H_
