// The etcd v3 gRPC services a member answers before it has a replicated
// store: Maintenance.Status and Cluster.MemberList, from the member's
// configuration. Every other method answers UNIMPLEMENTED.
//
// Thread-safe: the services only read the immutable ServerConfig they are
// given, which must outlive them.
#ifndef LOCKD_SERVER_SERVICES_H_
#define LOCKD_SERVER_SERVICES_H_

#include "etcdserverpb/rpc.grpc.pb.h"
#include "lockd/server/config.h"

namespace lockd {

// Fills the header every etcd response carries.
void FillHeader(const ServerConfig& config, etcdserverpb::ResponseHeader* h);

class MaintenanceService final : public etcdserverpb::Maintenance::Service {
 public:
  explicit MaintenanceService(const ServerConfig* config) : config_(config) {}
  grpc::Status Status(grpc::ServerContext* ctx,
                      const etcdserverpb::StatusRequest* req,
                      etcdserverpb::StatusResponse* resp) override;

 private:
  const ServerConfig* config_;
};

class ClusterService final : public etcdserverpb::Cluster::Service {
 public:
  explicit ClusterService(const ServerConfig* config) : config_(config) {}
  grpc::Status MemberList(grpc::ServerContext* ctx,
                          const etcdserverpb::MemberListRequest* req,
                          etcdserverpb::MemberListResponse* resp) override;

 private:
  const ServerConfig* config_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_SERVICES_H_
