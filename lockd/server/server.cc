#include "lockd/server/server.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netdb.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lockd/util/log.h"

namespace lockd {
namespace {

// gRPC framing on top of a request's own bytes, as etcd allows for.
constexpr int kGrpcOverheadBytes = 512 * 1024;

// gRPC reports a failed bind only as a null server; probing first lets the
// error name the cause ("Address already in use").
absl::Status ProbeBind(const Url& url) {
  if (url.port == 0) return absl::OkStatus();
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  struct addrinfo* res = nullptr;
  std::string port = absl::StrCat(url.port);
  if (int rc = getaddrinfo(url.host.c_str(), port.c_str(), &hints, &res);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("listen tcp ", url.HostPort(), ": ", gai_strerror(rc)));
  }
  absl::Status status = absl::OkStatus();
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EAFNOSUPPORT &&
        errno != EADDRNOTAVAIL) {
      status = absl::UnavailableError(absl::StrCat(
          "listen tcp ", url.HostPort(), ": bind: ", std::strerror(errno),
          ": stop the process using it or choose another port"));
    }
    close(fd);
    if (!status.ok()) break;
  }
  freeaddrinfo(res);
  return status;
}

void ConfigureBuilder(grpc::ServerBuilder& builder,
                      const ServerConfig& config) {
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_request_bytes) +
                                   kGrpcOverheadBytes);
  builder.SetMaxSendMessageSize(INT32_MAX);
  // Let clients ping every 5 s (etcd's --grpc-keepalive-min-time) even
  // without calls in flight, so their keepalives detect dead members.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 2 * 60 * 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
}

}  // namespace

Server::Server(ServerConfig config)
    : config_(std::move(config)),
      maintenance_(&config_),
      peer_maintenance_(&config_),
      cluster_(&config_) {}

Server::~Server() {
  Shutdown(absl::ZeroDuration());
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::Status Server::OpenStorage() {
  std::string member_dir = config_.data_dir + "/member";
  for (const std::string& dir :
       {member_dir, member_dir + "/raft", member_dir + "/kv"}) {
    if (absl::Status s = PrepareDataDir(dir); !s.ok()) return s;
  }
  bool restarted = false;
  if (absl::Status s = LoadOrStoreIdentity(member_dir, config_, &restarted);
      !s.ok()) {
    return s;
  }
  if (restarted) {
    Logf(LogLevel::kInfo, "server",
         "restarting member %x of cluster %x from %s; the --initial-cluster "
         "flags are ignored",
         config_.member_id, config_.cluster_id, config_.data_dir);
  }
  absl::StatusOr<std::unique_ptr<kv::MvccStore>> store =
      kv::MvccStore::Open(member_dir + "/kv");
  if (!store.ok()) return store.status();
  store_ = *std::move(store);
  absl::StatusOr<std::unique_ptr<raft::DiskStorage>> log =
      raft::DiskStorage::Open(member_dir + "/raft");
  if (!log.ok()) return log.status();
  log_ = *std::move(log);

  state_machine_ =
      std::make_unique<KvStateMachine>(config_.member_id, store_.get());
  watch_hub_ = std::make_unique<kv::WatchHub>(store_.get());
  state_machine_->set_watch_hub(watch_hub_.get());
  raft::TransportOptions topts;
  topts.cluster_id = config_.cluster_id;
  topts.self_id = config_.member_id;
  topts.seed = config_.member_id;
  raft::NodeOptions nopts;
  nopts.id = config_.member_id;
  nopts.tick_interval = absl::Milliseconds(config_.heartbeat_interval_ms);
  nopts.heartbeat_tick = 1;
  nopts.election_tick = static_cast<int>(config_.election_timeout_ms /
                                         config_.heartbeat_interval_ms);
  nopts.pre_vote = config_.pre_vote;
  nopts.seed = config_.member_id;
  if (config_.initial_cluster_state == "new") {
    for (const MemberConfig& m : config_.members) {
      nopts.bootstrap_voters.push_back(m.id);
    }
  }
  // The node is the transport's handler; it exists only after the
  // transport, so a forwarding shim is not needed: create the node with the
  // transport first, then point the transport at it.
  transport_ = std::make_unique<raft::Transport>(topts, &relay_);
  absl::StatusOr<std::unique_ptr<raft::RaftNode>> node = raft::RaftNode::Create(
      nopts, log_.get(), transport_.get(), state_machine_.get());
  if (!node.ok()) return node.status();
  node_ = *std::move(node);
  relay_.Attach(node_.get());
  for (const MemberConfig& m : config_.members) {
    if (m.id != config_.member_id && !m.peer_urls.empty()) {
      transport_->AddPeer(m.id, m.peer_urls[0].HostPort());
    }
  }
  kv_ = std::make_unique<KvService>(&config_, node_.get(), store_.get(),
                                    state_machine_.get(), &compaction_mu_);
  peer_kv_ = std::make_unique<KvService>(&config_, node_.get(), store_.get(),
                                         state_machine_.get(), &compaction_mu_);
  watch_ =
      std::make_unique<WatchService>(&config_, node_.get(), watch_hub_.get());
  maintenance_.Attach(node_.get(), store_.get(), kv_.get());
  peer_maintenance_.Attach(node_.get(), store_.get(), peer_kv_.get());
  return absl::OkStatus();
}

void Server::CompactorLoop() {
  // Reclaims space after logical compactions, a bounded slice at a time so
  // it never monopolizes the disk.
  while (true) {
    {
      absl::MutexLock lock(&stop_mu_);
      stop_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1));
      if (stopping_) return;
    }
    absl::MutexLock lock(&compaction_mu_);
    absl::StatusOr<bool> done = store_->CompactSome(1000);
    if (!done.ok()) {
      Logf(LogLevel::kError, "server", "compaction failed: %s",
           std::string(done.status().message()));
    }
  }
}

absl::Status Server::Start() {
  if (absl::Status s = PrepareDataDir(config_.data_dir); !s.ok()) return s;
  std::string lock_path = config_.data_dir + "/LOCK";
  lock_fd_ = open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot access data directory: open ", lock_path, ": ",
                     std::strerror(errno)));
  }
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", config_.data_dir,
        " is in use by another lockd process: stop it, or give this member "
        "its own --data-dir"));
  }

  for (const auto* urls : {&config_.listen_client, &config_.listen_peer}) {
    for (const Url& url : *urls) {
      if (absl::Status s = ProbeBind(url); !s.ok()) return s;
    }
  }
  if (absl::Status s = OpenStorage(); !s.ok()) return s;

  grpc::EnableDefaultHealthCheckService(true);

  grpc::ServerBuilder client_builder;
  ConfigureBuilder(client_builder, config_);
  client_ports_.assign(config_.listen_client.size(), 0);
  for (size_t i = 0; i < config_.listen_client.size(); ++i) {
    client_builder.AddListeningPort(config_.listen_client[i].HostPort(),
                                    grpc::InsecureServerCredentials(),
                                    &client_ports_[i]);
  }
  client_builder.RegisterService(&maintenance_);
  client_builder.RegisterService(&cluster_);
  client_builder.RegisterService(kv_.get());
  client_builder.RegisterService(watch_.get());
  client_server_ = client_builder.BuildAndStart();
  if (client_server_ == nullptr) {
    return absl::UnavailableError(
        "cannot listen on --listen-client-urls: check that the addresses "
        "exist on this host and the ports are free");
  }

  grpc::ServerBuilder peer_builder;
  ConfigureBuilder(peer_builder, config_);
  peer_ports_.assign(config_.listen_peer.size(), 0);
  for (size_t i = 0; i < config_.listen_peer.size(); ++i) {
    peer_builder.AddListeningPort(config_.listen_peer[i].HostPort(),
                                  grpc::InsecureServerCredentials(),
                                  &peer_ports_[i]);
  }
  peer_builder.RegisterService(transport_->service());
  // Followers forward client writes to the leader's peer port.
  peer_builder.RegisterService(peer_kv_.get());
  peer_builder.RegisterService(&peer_maintenance_);
  peer_server_ = peer_builder.BuildAndStart();
  if (peer_server_ == nullptr) {
    client_server_->Shutdown();
    client_server_.reset();
    return absl::UnavailableError(
        "cannot listen on --listen-peer-urls: check that the addresses exist "
        "on this host and the ports are free");
  }

  watch_hub_->Start();
  node_->Start();
  compactor_ = std::thread([this] { CompactorLoop(); });
  for (size_t i = 0; i < config_.listen_peer.size(); ++i) {
    Logf(LogLevel::kInfo, "server", "listening for peers on %s (port %d)",
         config_.listen_peer[i].ToString(), peer_ports_[i]);
  }
  for (size_t i = 0; i < config_.listen_client.size(); ++i) {
    Logf(LogLevel::kInfo, "server",
         "ready to serve client requests on %s (port %d)",
         config_.listen_client[i].ToString(), client_ports_[i]);
  }
  return absl::OkStatus();
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  if (compactor_.joinable()) compactor_.join();
  auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace);
  if (client_server_ != nullptr) {
    client_server_->Shutdown(deadline);
    client_server_->Wait();
    client_server_.reset();
  }
  if (transport_ != nullptr) transport_->Stop();
  if (peer_server_ != nullptr) {
    peer_server_->Shutdown(deadline);
    peer_server_->Wait();
    peer_server_.reset();
  }
  if (node_ != nullptr) node_->Stop();
  // After the client server: no stream is left to use the hub.
  if (watch_hub_ != nullptr) watch_hub_->Stop();
}

}  // namespace lockd
