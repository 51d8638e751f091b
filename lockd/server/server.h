// A lockd member's process-level shell: the data directory and its lock, the
// client listeners (etcd v3 gRPC + grpc.health.v1) and the peer listeners.
//
// Start() then Shutdown() from one thread; Shutdown() may also be called from
// another thread while nothing else is.
#ifndef LOCKD_SERVER_SERVER_H_
#define LOCKD_SERVER_SERVER_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "lockd/server/config.h"
#include "lockd/server/services.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace lockd {

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
  ServerConfig config_;
  int lock_fd_ = -1;
  MaintenanceService maintenance_;
  ClusterService cluster_;
  std::unique_ptr<grpc::Server> client_server_;
  std::unique_ptr<grpc::Server> peer_server_;
  std::vector<int> client_ports_;
  std::vector<int> peer_ports_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_SERVER_H_
