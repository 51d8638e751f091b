#include "lockd/server/services.h"

#include <unistd.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kv/snapshot/archive.h"
#include "lockd/server/cluster_service.h"
#include "lockd/util/clock.h"
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
  if (membership_ != nullptr) {
    std::optional<etcdserverpb::Member> self =
        membership_->Find(config_->member_id);
    resp->set_islearner(self.has_value() && self->islearner());
  }
  if (store_ != nullptr) {
    resp->mutable_header()->set_revision(store_->revision());
    int64_t size = static_cast<int64_t>(store_->ApproximateSizeBytes());
    resp->set_dbsize(size);
    resp->set_dbsizeinuse(size);
  }
  return grpc::Status::OK;
}

void MaintenanceService::FillFullHeader(etcdserverpb::ResponseHeader* h) const {
  FillHeader(*config_, h);
  h->set_raft_term(node_->term());
  h->set_revision(store_->revision());
}

namespace {
grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}
}  // namespace

grpc::Status MaintenanceService::Hash(grpc::ServerContext*,
                                      const etcdserverpb::HashRequest*,
                                      etcdserverpb::HashResponse* resp) {
  absl::StatusOr<kv::MvccStore::HashResult> h = store_->HashKV(0);
  if (!h.ok()) return ToGrpc(h.status());
  FillFullHeader(resp->mutable_header());
  resp->mutable_header()->set_revision(h->revision);
  resp->set_hash(h->hash);
  return grpc::Status::OK;
}

grpc::Status MaintenanceService::HashKV(grpc::ServerContext*,
                                        const etcdserverpb::HashKVRequest* req,
                                        etcdserverpb::HashKVResponse* resp) {
  absl::StatusOr<kv::MvccStore::HashResult> h = store_->HashKV(req->revision());
  if (!h.ok()) return ToGrpc(h.status());
  FillFullHeader(resp->mutable_header());
  resp->set_hash(h->hash);
  resp->set_compact_revision(h->compact_revision);
  resp->set_hash_revision(h->revision);
  return grpc::Status::OK;
}

grpc::Status MaintenanceService::Defragment(
    grpc::ServerContext*, const etcdserverpb::DefragmentRequest*,
    etcdserverpb::DefragmentResponse* resp) {
  // RocksDB compacts its files while reads and writes continue.
  if (absl::Status s = store_->Defragment(); !s.ok()) return ToGrpc(s);
  FillFullHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status MaintenanceService::Snapshot(
    grpc::ServerContext* ctx, const etcdserverpb::SnapshotRequest*,
    grpc::ServerWriter<etcdserverpb::SnapshotResponse>* writer) {
  // Each snapshot holds a checkpoint on disk while it streams: bound them.
  constexpr int kMaxConcurrent = 2;
  if (snapshots_in_flight_.fetch_add(1) >= kMaxConcurrent) {
    snapshots_in_flight_.fetch_sub(1);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "etcdserver: too many requests (a snapshot is "
                        "already being taken; retry when it is done)");
  }
  const std::string dir = absl::StrCat(config_->data_dir, "/member/snap-",
                                       getpid(), "-", snapshot_seq_++);
  auto cleanup = [&] {
    kv::RemoveFlatDir(dir);
    snapshots_in_flight_.fetch_sub(1);
  };
  if (absl::Status s = store_->Checkpoint(dir); !s.ok()) {
    cleanup();
    return ToGrpc(s);
  }
  absl::StatusOr<std::unique_ptr<kv::ArchiveReader>> reader =
      kv::ArchiveReader::Open(dir);
  if (!reader.ok()) {
    cleanup();
    return ToGrpc(reader.status());
  }
  uint64_t remaining = (*reader)->total_bytes();
  while (true) {
    if (ctx->IsCancelled()) {
      cleanup();
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    etcdserverpb::SnapshotResponse resp;
    std::string* blob = resp.mutable_blob();
    absl::StatusOr<bool> more = (*reader)->Next(1 << 20, blob);
    if (!more.ok()) {
      cleanup();
      return ToGrpc(more.status());
    }
    remaining -= blob->size();
    resp.set_remaining_bytes(remaining);
    FillFullHeader(resp.mutable_header());
    if (!writer->Write(resp)) {
      cleanup();
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    if (!*more) break;
  }
  cleanup();
  return grpc::Status::OK;
}

grpc::Status MaintenanceService::MoveLeader(
    grpc::ServerContext* ctx, const etcdserverpb::MoveLeaderRequest* req,
    etcdserverpb::MoveLeaderResponse* resp) {
  if (!node_->is_leader()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "etcdserver: not leader");
  }
  std::optional<etcdserverpb::Member> target =
      membership_->Find(req->targetid());
  if (!target.has_value() || target->islearner()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "etcdserver: bad leader transferee");
  }
  if (absl::Status s = MoveLeadership(node_, req->targetid(),
                                      MonotonicNow() + absl::Seconds(10));
      !s.ok()) {
    return ToGrpc(s);
  }
  FillFullHeader(resp->mutable_header());
  return grpc::Status::OK;
}

}  // namespace lockd
