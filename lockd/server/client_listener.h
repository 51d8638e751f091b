// The client port, shared by gRPC and HTTP/1.x as etcd's is: a listener
// that accepts each connection itself, looks at its first bytes without
// consuming them, and hands it on. A connection that opens with the HTTP/2
// preface ("PRI * HTTP/2.0") goes to the current gRPC server
// (grpc::AddInsecureChannelFromFd); anything else is HTTP/1.x and goes to
// the HTTP handler (/health, /version, the JSON gateway), on a thread of its
// own.
//
// A connection that sends nothing is closed after kSniffTimeout; at most
// kMaxPending wait to be classified and kMaxHttpConnections HTTP/1.x
// connections are served at once (more are answered 503 and closed).
//
// Start() binds every address of every URL (port 0: the OS picks one, and the
// other addresses of that URL take the same port); Stop() closes the
// listeners and every HTTP connection, and joins their threads.
#ifndef LOCKD_SERVER_CLIENT_LISTENER_H_
#define LOCKD_SERVER_CLIENT_LISTENER_H_

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/server/config.h"

namespace lockd {

class ClientListener {
 public:
  // Takes ownership of an accepted gRPC connection (returns false when no
  // gRPC server is up: the listener closes the connection).
  using GrpcHandoff = std::function<bool(int fd)>;
  // Serves one HTTP/1.x connection until it ends; the listener closes `fd`
  // afterwards. `peer` is "ipv4:1.2.3.4:5" or "ipv6:[::1]:5".
  using HttpServe = std::function<void(int fd, const std::string& peer)>;

  static constexpr absl::Duration kSniffTimeout = absl::Seconds(10);
  static constexpr int kMaxPending = 1024;
  static constexpr int kMaxHttpConnections = 256;

  ClientListener(GrpcHandoff grpc, HttpServe http);
  ~ClientListener();
  ClientListener(const ClientListener&) = delete;
  ClientListener& operator=(const ClientListener&) = delete;

  // Binds every URL and starts accepting. `ports` gets the port bound for
  // each URL. Errors: kUnavailable naming the address (nothing is left
  // bound).
  absl::Status Start(const std::vector<Url>& urls, std::vector<int>* ports);
  void Stop();

  // The client address of a connection handed to gRPC, whose calls name
  // their peer "fd:N": "ipv4:127.0.0.1:40000", or `grpc_peer` unchanged.
  std::string PeerOf(const std::string& grpc_peer) const;

 private:
  struct Pending {
    int fd;
    std::string peer;
    absl::Time deadline;
  };
  void AcceptLoop();
  // Looks at what `p` sent: true when it was handed on or closed.
  bool Classify(const Pending& p);
  void StartHttp(int fd, const std::string& peer);

  GrpcHandoff grpc_;
  HttpServe http_;
  std::vector<int> listen_fds_;
  int wake_fd_ = -1;  // an eventfd: Stop() wakes the accept loop
  std::thread acceptor_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // HTTP connections being served: fd -> its thread.
  std::map<int, std::thread> http_threads_ ABSL_GUARDED_BY(mu_);
  // Threads of HTTP connections that ended, joined by the next accept.
  std::vector<std::thread> finished_ ABSL_GUARDED_BY(mu_);
  // Client addresses of connections handed to gRPC, by fd.
  std::map<int, std::string> grpc_peers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lockd

#endif  // LOCKD_SERVER_CLIENT_LISTENER_H_
