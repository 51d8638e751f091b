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
    : config_(std::move(config)), maintenance_(&config_), cluster_(&config_) {}

Server::~Server() {
  Shutdown(absl::ZeroDuration());
  if (lock_fd_ >= 0) close(lock_fd_);
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
  peer_server_ = peer_builder.BuildAndStart();
  if (peer_server_ == nullptr) {
    client_server_->Shutdown();
    client_server_.reset();
    return absl::UnavailableError(
        "cannot listen on --listen-peer-urls: check that the addresses exist "
        "on this host and the ports are free");
  }

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
  auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace);
  if (client_server_ != nullptr) {
    client_server_->Shutdown(deadline);
    client_server_->Wait();
    client_server_.reset();
  }
  if (peer_server_ != nullptr) {
    peer_server_->Shutdown(deadline);
    peer_server_->Wait();
    peer_server_.reset();
  }
}

}  // namespace lockd
