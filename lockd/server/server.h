// A lockd member: the data directory and its lock, the raft log and the
// key-value store on disk, the raft node and its peer transport, and the
// client listeners (etcd v3 gRPC + grpc.health.v1) and peer listeners.
//
// Data directory layout: <data-dir>/LOCK (held while running),
// <data-dir>/member/raft (the raft log, RocksDB), <data-dir>/member/kv (the
// MVCC store, RocksDB, see kv/mvcc/store.h), <data-dir>/member/snap
// (snapshot images in transit, see snapshot_io.h).
//
// Start() then Shutdown() from one thread; Shutdown() may also be called from
// another thread while nothing else is.
#ifndef LOCKD_SERVER_SERVER_H_
#define LOCKD_SERVER_SERVER_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kv/mvcc/store.h"
#include "kv/watch/hub.h"
#include "lockd/lock/lock_manager.h"
#include "lockd/server/auto_compactor.h"
#include "lockd/server/client_listener.h"
#include "lockd/server/cluster_service.h"
#include "lockd/server/config.h"
#include "lockd/server/corrupt_check.h"
#include "lockd/server/election_service.h"
#include "lockd/server/http_gateway.h"
#include "lockd/server/kv_service.h"
#include "lockd/server/kv_state_machine.h"
#include "lockd/server/lease_service.h"
#include "lockd/server/lock_service.h"
#include "lockd/server/lockd_locks_service.h"
#include "lockd/server/membership.h"
#include "lockd/server/proxy.h"
#include "lockd/server/require_leader.h"
#include "lockd/server/services.h"
#include "lockd/server/snapshot_io.h"
#include "lockd/server/tls.h"
#include "lockd/server/watch_service.h"
#include "lockd/util/metrics.h"
#include "lockd/util/timed_loop.h"
#include "raft/node/node.h"
#include "raft/storage/disk_storage.h"
#include "raft/transport/transport.h"

namespace grpc {
class Channel;
class Server;
}  // namespace grpc

namespace lockd {

// Hands the transport's inbound traffic to the raft node, which is created
// after the transport (it needs the transport to send).
class NodeRelay final : public raft::MessageHandler {
 public:
  void Attach(raft::RaftNode* node) { node_.store(node); }
  absl::Status CheckPeer(uint64_t from) override {
    raft::RaftNode* node = node_.load();
    if (node == nullptr) return absl::UnavailableError("member is starting");
    return node->CheckPeer(from);
  }
  void Deliver(std::vector<raft::Message> messages) override {
    if (raft::RaftNode* node = node_.load()) node->Deliver(std::move(messages));
  }

 private:
  std::atomic<raft::RaftNode*> node_{nullptr};
};

class Server {
 public:
  // `config` must have passed ValidateConfig().
  explicit Server(ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Locks the data directory and binds every listener. Errors:
  // kFailedPrecondition (data directory unusable or locked by another
  // process), kUnavailable (a listen address cannot be bound). On error
  // nothing is left listening.
  [[nodiscard]] absl::Status Start();

  // Stops accepting calls, waits up to `grace` for calls in flight, then
  // cancels the rest.
  void Shutdown(absl::Duration grace);

  const ServerConfig& config() const { return config_; }
  // The ports actually bound, in --listen-client-urls order (differs from
  // the configured port only when that was 0).
  const std::vector<int>& client_ports() const { return client_ports_; }
  const std::vector<int>& peer_ports() const { return peer_ports_; }

 private:
  absl::Status OpenStorage();
  CorruptionChecker::Hooks CorruptionCheckHooks();
  // A member joining a running cluster learns its own ID and the cluster's
  // from the members in --initial-cluster.
  absl::Status JoinFromPeers();
  // One round of JoinFromPeers: kFailedPrecondition when the cluster does
  // not list this member yet, kUnavailable when no peer answered.
  absl::Status AskPeersToJoin();
  // Adds and removes transport peers to match the member table.
  void UpdatePeers(const MemberList& members);
  // Disconnects removed members whose grace period is over.
  void RetirePeers();
  // Logs "ready to serve client requests" for each client listener: the
  // member is in the member table with its name and client URLs.
  void LogReady();
  // Replicates this member's name and client URLs once a leader is known,
  // unless the member table has them already.
  void PublishLoop();
  // Once this member is removed: swaps the client listener for a proxy to
  // the current members for the grace period, then stops the process.
  void StartRetire();
  void Retire();
  // Once a second: retires removed peers, ends the streams of a member cut
  // off from its leader, and reclaims a slice of compacted space.
  void CompactorStep();
  // The client port's two ways in.
  bool HandOffGrpc(int fd);
  std::shared_ptr<grpc::Channel> GatewayChannel();
  // Moves the client gRPC server out (for shutting it down): nothing is
  // handed to it any more.
  std::unique_ptr<grpc::Server> TakeClientServer();

  // Registers the series the storage layers update (into their options)
  // and the figures read when scraped.
  void SetUpMetrics(kv::StoreOptions* store_options,
                    raft::DiskStorageOptions* log_options);

  ServerConfig config_;
  // Read at the start of Start(), before anything listens or dials.
  MemberTls tls_;
  int lock_fd_ = -1;
  // First, so every component that updates a series (or is read by a
  // collector) is gone before it.
  metrics::Registry metrics_;
  std::unique_ptr<kv::MvccStore> store_;
  std::unique_ptr<raft::DiskStorage> log_;
  std::unique_ptr<kv::WatchHub> watch_hub_;
  std::unique_ptr<KvStateMachine> state_machine_;
  std::unique_ptr<kv::Lessor> lessor_;
  // Outlives the transport, which uses it.
  std::unique_ptr<StoreSnapshotIo> snapshot_io_;
  NodeRelay relay_;
  std::unique_ptr<raft::Transport> transport_;
  std::unique_ptr<raft::RaftNode> node_;
  std::unique_ptr<KvService> kv_;
  std::unique_ptr<KvService> peer_kv_;
  // Keep-alive and Observe streams, ended when the member has no leader
  // (declared before the services that register with it).
  RequireLeaderStreams require_leader_;
  std::unique_ptr<LeaseDriver> lease_driver_;
  std::unique_ptr<LeaseService> lease_;
  std::unique_ptr<LeaseService> peer_lease_;
  std::unique_ptr<WatchService> watch_;
  // Lock and election waits, fed by the state machine's commit hook.
  std::unique_ptr<lock::LockManager> locks_;
  std::unique_ptr<LockService> lock_;
  std::unique_ptr<ElectionService> election_;
  std::unique_ptr<LockdLocksService> lockd_locks_;
  absl::Mutex compaction_mu_;
  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  TimedLoop compactor_;
  // --auto-compaction-*: compacts the history as it ages, while leading.
  std::unique_ptr<AutoCompactor> auto_compactor_;
  // --experimental-*corrupt-check*: compares members' HashKV.
  std::unique_ptr<CorruptionChecker> corruption_checker_;
  MaintenanceService maintenance_;
  // A second instance for the peer port, where followers forward alarms.
  MaintenanceService peer_maintenance_;
  ClusterService cluster_;
  // Second instances for the peer port, where members forward changes to
  // the leader.
  ClusterService peer_cluster_;
  std::unique_ptr<PeerService> peer_service_;
  Membership membership_;
  std::thread publisher_;
  std::thread retirer_;
  std::unique_ptr<RetiredProxy> proxy_;
  // The client port: connections go to client_server_ (gRPC) or to
  // http_gateway_ (HTTP/1.x).
  std::unique_ptr<HttpGateway> http_gateway_;
  std::unique_ptr<ClientListener> client_listener_;
  // --listen-metrics-urls: HTTP /metrics and /health only.
  std::unique_ptr<ClientListener> metrics_listener_;
  // Guards client_server_ against the retirer swapping it, and the gateway's
  // in-process channel to it.
  absl::Mutex client_server_mu_;
  std::shared_ptr<grpc::Channel> inproc_channel_
      ABSL_GUARDED_BY(client_server_mu_);
  grpc::Server* inproc_server_ ABSL_GUARDED_BY(client_server_mu_) = nullptr;
  absl::Mutex peers_mu_;
  // The transport's peers: id -> "host:port".
  std::map<uint64_t, std::string> peers_ ABSL_GUARDED_BY(peers_mu_);
  // Removed members still connected, until when.
  std::map<uint64_t, absl::Time> retiring_peers_ ABSL_GUARDED_BY(peers_mu_);
  bool was_member_ ABSL_GUARDED_BY(peers_mu_) = false;
  bool removed_logged_ ABSL_GUARDED_BY(peers_mu_) = false;
  std::unique_ptr<grpc::Server> client_server_;
  std::unique_ptr<grpc::Server> peer_server_;
  std::vector<int> client_ports_;
  std::vector<int> metrics_ports_;
  std::vector<int> peer_ports_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_SERVER_H_
