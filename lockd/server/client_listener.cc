#include "lockd/server/client_listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"
#include "lockd/util/thread_name.h"

namespace lockd {
namespace {

std::string PeerName(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return absl::StrCat("ipv4:", host, ":", ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return absl::StrCat("ipv6:[", host, "]:", ntohs(in6->sin6_port));
  }
  return "unknown";
}

int BoundPort(int fd) {
  sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return 0;
  }
  if (addr.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
}

// Binds every address `url` names (all of them take the same port); returns
// the port.
absl::StatusOr<int> BindUrl(const Url& url, std::vector<int>* fds) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const char* host = url.host.empty() ? nullptr : url.host.c_str();
  std::string service = absl::StrCat(url.port);
  if (int rc = getaddrinfo(host, service.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("listen tcp ", url.HostPort(), ": ", gai_strerror(rc)));
  }
  int port = url.port;
  int bound = 0;
  absl::Status status = absl::OkStatus();
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
               ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6) {
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (port != 0) {
      if (ai->ai_family == AF_INET) {
        reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_port = htons(port);
      } else if (ai->ai_family == AF_INET6) {
        reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_port = htons(port);
      }
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      const int err = errno;
      close(fd);
      // A host name may also resolve to a family this host lacks.
      if (err == EAFNOSUPPORT || err == EADDRNOTAVAIL) continue;
      status = absl::UnavailableError(absl::StrCat(
          "listen tcp ", url.HostPort(), ": bind: ", std::strerror(err),
          ": stop the process using it or choose another port"));
      break;
    }
    if (listen(fd, 4096) != 0) {
      status = absl::UnavailableError(absl::StrCat(
          "listen tcp ", url.HostPort(), ": listen: ", std::strerror(errno)));
      close(fd);
      break;
    }
    if (port == 0) port = BoundPort(fd);
    fds->push_back(fd);
    ++bound;
  }
  freeaddrinfo(res);
  if (status.ok() && bound == 0) {
    status = absl::UnavailableError(absl::StrCat(
        "listen tcp ", url.HostPort(), ": no address of this host matches"));
  }
  if (!status.ok()) return status;
  return port;
}

void WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

ClientListener::ClientListener(GrpcHandoff grpc, HttpServe http)
    : grpc_(std::move(grpc)), http_(std::move(http)) {}

ClientListener::~ClientListener() { Stop(); }

absl::Status ClientListener::Start(const std::vector<Url>& urls,
                                   std::vector<int>* ports) {
  ports->clear();
  std::vector<int> fds;
  for (const Url& url : urls) {
    absl::StatusOr<int> port = BindUrl(url, &fds);
    if (!port.ok()) {
      for (int fd : fds) close(fd);
      return port.status();
    }
    ports->push_back(*port);
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    for (int fd : fds) close(fd);
    return absl::UnavailableError(
        absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  listen_fds_ = std::move(fds);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void ClientListener::Stop() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  if (acceptor_.joinable()) acceptor_.join();
  for (int fd : listen_fds_) close(fd);
  listen_fds_.clear();
  if (wake_fd_ >= 0) close(wake_fd_);
  wake_fd_ = -1;
  {
    absl::MutexLock lock(&mu_);
    // Ends each connection's reads and writes; its thread sees the hang-up,
    // cancels its call, and closes the fd.
    for (auto& [fd, t] : http_threads_) {
      shutdown(fd, SHUT_RDWR);
      threads.push_back(std::move(t));
    }
    http_threads_.clear();
    for (std::thread& t : finished_) threads.push_back(std::move(t));
    finished_.clear();
  }
  for (std::thread& t : threads) t.join();
}

std::string ClientListener::PeerOf(const std::string& grpc_peer) const {
  int fd = 0;
  if (!absl::StartsWith(grpc_peer, "fd:") ||
      !absl::SimpleAtoi(absl::string_view(grpc_peer).substr(3), &fd)) {
    return grpc_peer;
  }
  absl::MutexLock lock(&mu_);
  auto it = grpc_peers_.find(fd);
  return it == grpc_peers_.end() ? grpc_peer : it->second;
}

void ClientListener::AcceptLoop() {
  SetThreadName("client-accept");
  std::vector<Pending> pending;
  std::vector<pollfd> pfds;
  while (true) {
    {
      std::vector<std::thread> done;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) break;
        done.swap(finished_);
      }
      for (std::thread& t : done) t.join();
    }
    pfds.clear();
    pfds.push_back({wake_fd_, POLLIN, 0});
    for (int fd : listen_fds_) pfds.push_back({fd, POLLIN, 0});
    absl::Time next = absl::InfiniteFuture();
    for (const Pending& p : pending) {
      pfds.push_back({p.fd, POLLIN, 0});
      next = std::min(next, p.deadline);
    }
    int timeout_ms = -1;
    if (next != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::max<int64_t>(
          0, absl::ToInt64Milliseconds(next - MonotonicNow()) + 1));
    }
    int n = poll(pfds.data(), pfds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) {
      Logf(LogLevel::kError, "server", "client listener: poll: %s",
           std::strerror(errno));
      absl::SleepFor(absl::Milliseconds(10));
      continue;
    }
    if (n > 0 && (pfds[0].revents & POLLIN)) break;
    // Classify what was waiting before accepting more.
    const absl::Time now = MonotonicNow();
    std::vector<Pending> still;
    const size_t first_pending = 1 + listen_fds_.size();
    for (size_t i = 0; i < pending.size(); ++i) {
      const Pending& p = pending[i];
      if (n > 0 && pfds[first_pending + i].revents != 0) {
        if (Classify(p)) continue;
      }
      if (now >= p.deadline) {
        close(p.fd);
        continue;
      }
      still.push_back(p);
    }
    pending.swap(still);
    for (size_t i = 0; n > 0 && i < listen_fds_.size(); ++i) {
      if ((pfds[1 + i].revents & POLLIN) == 0) continue;
      while (true) {
        sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        int fd = accept4(listen_fds_[i], reinterpret_cast<sockaddr*>(&addr),
                         &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno == EMFILE || errno == ENFILE) {
            Logf(LogLevel::kWarning, "server",
                 "client listener: accept: %s (raise the open-files limit)",
                 std::strerror(errno));
            absl::SleepFor(absl::Milliseconds(10));
          }
          break;
        }
        if (static_cast<int>(pending.size()) >= kMaxPending) {
          close(fd);
          continue;
        }
        Pending p{fd, PeerName(addr), now + kSniffTimeout};
        // gRPC clients send their preface at once: most connections are
        // classified here, without another trip through poll.
        if (!Classify(p)) pending.push_back(std::move(p));
      }
    }
  }
  for (const Pending& p : pending) close(p.fd);
}

bool ClientListener::Classify(const Pending& p) {
  static constexpr char kPreface[] = "PRI * HTTP/2.0";
  char buf[sizeof(kPreface) - 1];
  ssize_t n = recv(p.fd, buf, sizeof(buf), MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return false;
  }
  if (n <= 0) {  // closed before it sent anything, or broken
    close(p.fd);
    return true;
  }
  const size_t len = static_cast<size_t>(n);
  const bool preface_so_far = std::memcmp(buf, kPreface, len) == 0;
  if (preface_so_far && len < sizeof(buf)) return false;  // wait for more
  if (preface_so_far) {
    int one = 1;
    setsockopt(p.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    {
      absl::MutexLock lock(&mu_);
      grpc_peers_[p.fd] = p.peer;
    }
    if (!grpc_(p.fd)) close(p.fd);
    return true;
  }
  StartHttp(p.fd, p.peer);
  return true;
}

void ClientListener::StartHttp(int fd, const std::string& peer) {
  absl::MutexLock lock(&mu_);
  if (stopping_ ||
      static_cast<int>(http_threads_.size()) >= kMaxHttpConnections) {
    constexpr absl::string_view kBody =
        "too many HTTP connections to this member: retry later, or use "
        "another member\n";
    WriteAll(fd, absl::StrCat("HTTP/1.1 503 Service Unavailable\r\n"
                              "Content-Type: text/plain; charset=utf-8\r\n"
                              "Connection: close\r\nContent-Length: ",
                              kBody.size(), "\r\n\r\n", kBody));
    close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  http_threads_[fd] = std::thread([this, fd, peer] {
    SetThreadName("client-http");
    http_(fd, peer);
    absl::MutexLock lock(&mu_);
    auto it = http_threads_.find(fd);
    if (it != http_threads_.end()) {
      finished_.push_back(std::move(it->second));
      http_threads_.erase(it);
    }
    close(fd);
  });
}

}  // namespace lockd
