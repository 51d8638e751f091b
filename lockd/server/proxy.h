// The client listener of a member that has been removed from the cluster.
//
// Clients are often configured with a static list of endpoints (Kubernetes'
// API server is), so a removed member's address keeps receiving calls until
// operators update every client. Rather than failing them (etcd lets them
// wait out their deadline), a retired lockd member relays every call, byte
// for byte, to a current member: unary calls and streams (watches, lease
// keep-alives) alike, with their metadata and deadline. Each call picks a
// member in turn, preferring connected ones; a member that fails is skipped
// by the next call. Linearizability is the target member's: the proxy keeps
// no state.
//
// Maintenance.Status is answered locally, so operators see the member is
// retired; it names the cluster's current members in `errors`.
//
// Once the grace period is over, Close() makes every call fail with etcd's
// "the member has been permanently removed from the cluster".
//
// Thread-safe.
#ifndef LOCKD_SERVER_PROXY_H_
#define LOCKD_SERVER_PROXY_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lockd/server/config.h"

namespace lockd {

class RetiredProxy final : public grpc::CallbackGenericService {
 public:
  // `targets`: the client URLs of the current members; https ones are
  // dialed with `tls_credentials` (the member's --trusted-ca-file, and its
  // --cert-file/--key-file as the client certificate), http ones
  // insecurely. `peer_of` turns a call's peer into the client's address
  // (see ClientListener::PeerOf).
  RetiredProxy(const ServerConfig* config, std::vector<Url> targets,
               std::shared_ptr<grpc::ChannelCredentials> tls_credentials,
               std::function<std::string(const std::string&)> peer_of);
  ~RetiredProxy() override;

  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* ctx) override;

  // From now on, every call fails with the permanent-removal error.
  void Close() { closed_.store(true); }

  // Calls relayed so far (for logs and tests).
  uint64_t relayed() const { return relayed_.load(); }

 private:
  class Relay;
  friend class Relay;
  struct Target {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<grpc::GenericStub> stub;
  };
  // The target for the next call.
  Target* Pick();
  // Logs once per client host that it should update its endpoints.
  void NoteClient(const std::string& peer);

  const ServerConfig* config_;
  std::function<std::string(const std::string&)> peer_of_;
  std::vector<std::unique_ptr<Target>> targets_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> relayed_{0};
  absl::Mutex mu_;
  std::set<std::string> clients_seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lockd

#endif  // LOCKD_SERVER_PROXY_H_
