#include "lockd/server/services.h"

#include "lockd/version.h"

namespace lockd {

void FillHeader(const ServerConfig& config, etcdserverpb::ResponseHeader* h) {
  h->set_cluster_id(config.cluster_id);
  h->set_member_id(config.member_id);
  // Revision and raft_term come from the replicated store (not yet wired).
}

grpc::Status MaintenanceService::Status(grpc::ServerContext*,
                                        const etcdserverpb::StatusRequest*,
                                        etcdserverpb::StatusResponse* resp) {
  FillHeader(*config_, resp->mutable_header());
  resp->set_version(kEtcdApiVersion);
  if (node_ != nullptr) {
    resp->mutable_header()->set_raft_term(node_->term());
    resp->set_leader(node_->leader());
    resp->set_raftterm(node_->term());
    resp->set_raftindex(node_->commit_index());
    resp->set_raftappliedindex(node_->applied_index());
  }
  if (store_ != nullptr) {
    resp->mutable_header()->set_revision(store_->revision());
    int64_t size = static_cast<int64_t>(store_->ApproximateSizeBytes());
    resp->set_dbsize(size);
    resp->set_dbsizeinuse(size);
  }
  return grpc::Status::OK;
}

grpc::Status ClusterService::MemberList(
    grpc::ServerContext*, const etcdserverpb::MemberListRequest*,
    etcdserverpb::MemberListResponse* resp) {
  FillHeader(*config_, resp->mutable_header());
  for (const MemberConfig& m : config_->members) {
    etcdserverpb::Member* out = resp->add_members();
    out->set_id(m.id);
    out->set_name(m.name);
    for (const Url& u : m.peer_urls) out->add_peerurls(u.ToString());
    if (m.id == config_->member_id) {
      for (const Url& u : config_->advertise_client) {
        out->add_clienturls(u.ToString());
      }
    }
  }
  return grpc::Status::OK;
}

}  // namespace lockd
