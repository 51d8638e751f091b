// etcd v3 Watch on a member: one bidirectional stream carries many watchers
// (create, cancel, progress requests) served from this member's applied
// state through the WatchHub, as etcd serves watches on every member.
//
// The method is registered raw (gRPC callback API on ByteBuffers): events
// are serialized once per committed batch by the hub and responses are
// assembled from those bytes, so a thousand watchers of one key do not
// re-serialize its events a thousand times. Requests are parsed as protobuf.
//
// Sending: a stream has at most one write in flight. Outputs the hub queues
// meanwhile wait in the hub's bounded stream queue; when the write
// completes, everything queued is turned into responses at once, merging
// consecutive event outputs of one watcher into one response (bounded by
// kMergeBytesMax) — a slow client gets fewer, larger responses rather than
// an unbounded backlog. Per watcher, order is kept.
//
// Thread-safe; config, node and hub must outlive the service, and the
// gRPC server must be shut down (ending every stream) before the hub stops.
#ifndef LOCKD_SERVER_WATCH_SERVICE_H_
#define LOCKD_SERVER_WATCH_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <set>

#include "absl/synchronization/mutex.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "kv/watch/hub.h"
#include "lockd/server/config.h"
#include "raft/node/node.h"

namespace lockd {

class WatchReactor;

class WatchService final
    : public etcdserverpb::Watch::WithRawCallbackMethod_Watch<
          etcdserverpb::Watch::Service> {
 public:
  WatchService(const ServerConfig* config, raft::RaftNode* node,
               kv::WatchHub* hub)
      : config_(config), node_(node), hub_(hub) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Watch(
      grpc::CallbackServerContext* ctx) override;

  // Streams open now (for tests and limits).
  int open_streams() const { return open_streams_.load(); }

  // Ends every open stream with `status` (require-leader: a member cut off
  // from its leader ends its streams with "etcdserver: no leader", so
  // clients resume elsewhere from their last revision). Returns how many.
  int EndAll(const grpc::Status& status);
  // As EndAll, and every stream opened afterwards ends at once with
  // `status` too (a removed member: its store no longer changes, so a watch
  // served from it would go silent). Returns how many were open.
  int EndAllForGood(const grpc::Status& status);

 private:
  friend class WatchReactor;
  // Adds `r` to the open streams; returns the status to end it with at once
  // when streams are refused (EndAllForGood).
  std::optional<grpc::Status> Register(WatchReactor* r);
  void Unregister(WatchReactor* r);
  absl::Mutex streams_mu_;
  std::set<WatchReactor*> streams_ ABSL_GUARDED_BY(streams_mu_);
  std::optional<grpc::Status> refuse_ ABSL_GUARDED_BY(streams_mu_);
  const ServerConfig* config_;
  raft::RaftNode* node_;
  kv::WatchHub* hub_;
  std::atomic<int> open_streams_{0};
};

}  // namespace lockd

#endif  // LOCKD_SERVER_WATCH_SERVICE_H_
