#include "lockd/server/http_gateway.h"

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "lockd/util/clock.h"
#include "lockd/util/json.h"
#include "lockd/util/log.h"
#include "lockd/version.h"

namespace lockd {
namespace {

namespace pb = google::protobuf;

// etcd 3.4's gateway paths (and 3.5's additions) and the methods they call.
constexpr struct {
  const char* path;
  const char* method;
} kRoutes[] = {
    {"/v3/kv/range", "etcdserverpb.KV.Range"},
    {"/v3/kv/put", "etcdserverpb.KV.Put"},
    {"/v3/kv/deleterange", "etcdserverpb.KV.DeleteRange"},
    {"/v3/kv/txn", "etcdserverpb.KV.Txn"},
    {"/v3/kv/compaction", "etcdserverpb.KV.Compact"},
    {"/v3/watch", "etcdserverpb.Watch.Watch"},
    {"/v3/lease/grant", "etcdserverpb.Lease.LeaseGrant"},
    {"/v3/lease/revoke", "etcdserverpb.Lease.LeaseRevoke"},
    {"/v3/kv/lease/revoke", "etcdserverpb.Lease.LeaseRevoke"},
    {"/v3/lease/keepalive", "etcdserverpb.Lease.LeaseKeepAlive"},
    {"/v3/lease/timetolive", "etcdserverpb.Lease.LeaseTimeToLive"},
    {"/v3/kv/lease/timetolive", "etcdserverpb.Lease.LeaseTimeToLive"},
    {"/v3/lease/leases", "etcdserverpb.Lease.LeaseLeases"},
    {"/v3/kv/lease/leases", "etcdserverpb.Lease.LeaseLeases"},
    {"/v3/cluster/member/add", "etcdserverpb.Cluster.MemberAdd"},
    {"/v3/cluster/member/remove", "etcdserverpb.Cluster.MemberRemove"},
    {"/v3/cluster/member/update", "etcdserverpb.Cluster.MemberUpdate"},
    {"/v3/cluster/member/list", "etcdserverpb.Cluster.MemberList"},
    {"/v3/cluster/member/promote", "etcdserverpb.Cluster.MemberPromote"},
    {"/v3/maintenance/alarm", "etcdserverpb.Maintenance.Alarm"},
    {"/v3/maintenance/status", "etcdserverpb.Maintenance.Status"},
    {"/v3/maintenance/defragment", "etcdserverpb.Maintenance.Defragment"},
    {"/v3/maintenance/hash", "etcdserverpb.Maintenance.Hash"},
    {"/v3/maintenance/hashkv", "etcdserverpb.Maintenance.HashKV"},
    {"/v3/maintenance/snapshot", "etcdserverpb.Maintenance.Snapshot"},
    {"/v3/maintenance/transfer-leadership",
     "etcdserverpb.Maintenance.MoveLeader"},
    {"/v3/maintenance/downgrade", "etcdserverpb.Maintenance.Downgrade"},
    {"/v3/auth/enable", "etcdserverpb.Auth.AuthEnable"},
    {"/v3/auth/disable", "etcdserverpb.Auth.AuthDisable"},
    {"/v3/auth/status", "etcdserverpb.Auth.AuthStatus"},
    {"/v3/auth/authenticate", "etcdserverpb.Auth.Authenticate"},
    {"/v3/auth/user/add", "etcdserverpb.Auth.UserAdd"},
    {"/v3/auth/user/get", "etcdserverpb.Auth.UserGet"},
    {"/v3/auth/user/list", "etcdserverpb.Auth.UserList"},
    {"/v3/auth/user/delete", "etcdserverpb.Auth.UserDelete"},
    {"/v3/auth/user/changepw", "etcdserverpb.Auth.UserChangePassword"},
    {"/v3/auth/user/grant", "etcdserverpb.Auth.UserGrantRole"},
    {"/v3/auth/user/revoke", "etcdserverpb.Auth.UserRevokeRole"},
    {"/v3/auth/role/add", "etcdserverpb.Auth.RoleAdd"},
    {"/v3/auth/role/get", "etcdserverpb.Auth.RoleGet"},
    {"/v3/auth/role/list", "etcdserverpb.Auth.RoleList"},
    {"/v3/auth/role/delete", "etcdserverpb.Auth.RoleDelete"},
    {"/v3/auth/role/grant", "etcdserverpb.Auth.RoleGrantPermission"},
    {"/v3/auth/role/revoke", "etcdserverpb.Auth.RoleRevokePermission"},
    {"/v3/lock/lock", "v3lockpb.Lock.Lock"},
    {"/v3/lock/unlock", "v3lockpb.Lock.Unlock"},
    {"/v3/election/campaign", "v3electionpb.Election.Campaign"},
    {"/v3/election/proclaim", "v3electionpb.Election.Proclaim"},
    {"/v3/election/leader", "v3electionpb.Election.Leader"},
    {"/v3/election/observe", "v3electionpb.Election.Observe"},
    {"/v3/election/resign", "v3electionpb.Election.Resign"},
};

const char* StatusText(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Request Entity Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
  }
  return "Unknown";
}

// grpc-gateway's mapping (etcd 3.4's gateway uses it).
int HttpStatusFromCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::CANCELLED:
      return 408;
    case grpc::StatusCode::UNKNOWN:
      return 500;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return 400;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
      return 409;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return 412;
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::INTERNAL:
      return 500;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DATA_LOSS:
      return 500;
    default:
      return 500;
  }
}

// The unary error body: {"error":..., "message":..., "code":...}.
std::string ErrorBody(const grpc::Status& s) {
  return absl::StrCat("{\"error\":", JsonString(s.error_message()),
                      ",\"message\":", JsonString(s.error_message()),
                      ",\"code\":", static_cast<int>(s.error_code()), "}");
}

// A stream's closing error line.
std::string StreamErrorBody(const grpc::Status& s) {
  const int http = HttpStatusFromCode(s.error_code());
  return absl::StrCat(
      "{\"error\":{\"grpc_code\":", static_cast<int>(s.error_code()),
      ",\"http_code\":", http, ",\"message\":", JsonString(s.error_message()),
      ",\"http_status\":", JsonString(StatusText(http)), "}}");
}

grpc::ByteBuffer ToBuffer(const pb::Message& m) {
  std::string bytes = m.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

bool FromBuffer(const grpc::ByteBuffer& buf, pb::Message* m) {
  std::vector<grpc::Slice> slices;
  if (!buf.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return m->ParseFromString(bytes);
}

// An eventfd a call's completion signals, so a thread can wait for it and
// for its client's hang-up in one poll.
class Signal {
 public:
  Signal() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~Signal() {
    if (fd_ >= 0) close(fd_);
  }
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  void Notify() {
    uint64_t one = 1;
    (void)!write(fd_, &one, sizeof(one));
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Waits until `done` is notified. If the client at `sock` hangs up first,
// calls `on_hangup` once and goes on waiting. Returns true when it hung up.
bool WaitUnlessHangup(int sock, const Signal& done,
                      const std::function<void()>& on_hangup) {
  bool hung_up = false;
  while (true) {
    pollfd p[2] = {{done.fd(), POLLIN, 0}, {sock, POLLRDHUP, 0}};
    int n = poll(p, hung_up ? 1 : 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return hung_up;
    }
    if (p[0].revents & POLLIN) return hung_up;
    if (!hung_up && p[1].revents != 0) {
      hung_up = true;
      on_hangup();
    }
  }
}

// What every response carries, as etcd's: the date, and CORS headers
// letting browser pages call the gateway.
std::string CommonHeaders() {
  return absl::StrCat(
      "Access-Control-Allow-Headers: accept, content-type, authorization\r\n"
      "Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
      "Access-Control-Allow-Origin: *\r\n"
      "Date: ",
      absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT", absl::Now(),
                       absl::UTCTimeZone()),
      "\r\n");
}

struct Request {
  std::string method;
  std::string path;
  std::string query;
  std::map<std::string, std::string> headers;  // names lower-case
  std::string body;
};

// process_* as Prometheus' client libraries export them, from /proc.
void CollectProcessMetrics(metrics::Sink& sink) {
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) in parentheses.
  const size_t close = stat.rfind(')');
  std::vector<std::string> f;
  if (close != std::string::npos) {
    f = absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // f[0] is field 3 (state): utime is field 14, stime 15, starttime 22,
  // vsize 23, rss 24.
  auto field = [&f](size_t n) {
    double v = 0;
    if (n - 3 < f.size()) (void)absl::SimpleAtod(f[n - 3], &v);
    return v;
  };
  if (f.size() > 21) {
    sink.Counter("process_cpu_seconds_total",
                 "Total user and system CPU time spent in seconds.", {},
                 (field(14) + field(15)) / tick);
    double boot = 0;
    std::ifstream proc_stat("/proc/stat");
    for (std::string line; std::getline(proc_stat, line);) {
      absl::string_view l = line;
      if (absl::ConsumePrefix(&l, "btime ")) {
        (void)absl::SimpleAtod(l, &boot);
      }
    }
    sink.Gauge("process_resident_memory_bytes",
               "Resident memory size in bytes.", {}, field(24) * page);
    sink.Gauge("process_start_time_seconds",
               "Start time of the process since unix epoch in seconds.", {},
               boot + field(22) / tick);
    sink.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
               {}, field(23));
  }
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++fds;
    }
    closedir(d);
    --fds;  // the directory stream's own
  }
  sink.Gauge("process_open_fds", "Number of open file descriptors.", {}, fds);
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    sink.Gauge("process_max_fds", "Maximum number of open file descriptors.",
               {}, static_cast<double>(lim.rlim_cur));
  }
}

}  // namespace

class HttpGateway::Connection {
 public:
  Connection(HttpGateway* gw, int fd, bool metrics_only)
      : gw_(gw), fd_(fd), metrics_only_(metrics_only) {}

  void Run() {
    while (true) {
      Request req;
      if (!ReadRequest(&req)) return;
      if (!Handle(req) || !keep_alive_) return;
    }
  }

 private:
  enum class Fill { kOk, kClosed, kTimeout };

  // Appends what the socket has to in_, waiting up to `wait`.
  Fill More(absl::Duration wait) {
    pollfd p{fd_, POLLIN, 0};
    const absl::Time until = MonotonicNow() + wait;
    while (true) {
      int ms = static_cast<int>(std::max<int64_t>(
          0, absl::ToInt64Milliseconds(until - MonotonicNow())));
      int n = poll(&p, 1, ms);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Fill::kClosed;
      if (n == 0) return Fill::kTimeout;
      char buf[16384];
      ssize_t got = recv(fd_, buf, sizeof(buf), 0);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0) return Fill::kClosed;
      in_.append(buf, static_cast<size_t>(got));
      return Fill::kOk;
    }
  }

  bool WriteAll(absl::string_view data) {
    while (!data.empty()) {
      ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd_, POLLOUT, 0};
        if (poll(&p, 1,
                 static_cast<int>(absl::ToInt64Milliseconds(kStallTimeout))) <=
            0) {
          return false;
        }
        continue;
      }
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Answers with a whole body. Returns whether the connection may go on.
  bool Respond(int status, absl::string_view content_type,
               absl::string_view body, bool close_after,
               absl::string_view extra_headers = "") {
    std::string head = absl::StrCat(
        "HTTP/1.1 ", status, " ", StatusText(status), "\r\n", CommonHeaders(),
        "Content-Type: ", content_type, "\r\nContent-Length: ", body.size(),
        "\r\n", extra_headers);
    const bool closing = close_after || !keep_alive_;
    if (closing) {
      head += "Connection: close\r\n";
    } else if (!http11_) {
      head += "Connection: keep-alive\r\n";
    }
    head += "\r\n";
    return WriteAll(absl::StrCat(head, body)) && !closing;
  }

  bool RespondText(int status, absl::string_view text, bool close_after,
                   absl::string_view extra_headers = "") {
    return Respond(
        status, "text/plain; charset=utf-8", absl::StrCat(text, "\n"),
        close_after,
        absl::StrCat("X-Content-Type-Options: nosniff\r\n", extra_headers));
  }

  bool RespondError(const grpc::Status& s, bool close_after) {
    return Respond(HttpStatusFromCode(s.error_code()), "application/json",
                   ErrorBody(s), close_after);
  }

  // Reads one request. False: the connection ends (any error was answered).
  bool ReadRequest(Request* req) {
    // Bytes left from a previous request (pipelining) come first.
    absl::Time deadline = MonotonicNow() + kIdleTimeout;
    bool started = false;
    size_t head_end = std::string::npos;
    size_t body_start = 0;
    while (true) {
      // Empty lines before a request line are ignored (RFC 9112 2.2).
      size_t skip = 0;
      while (skip < in_.size() && (in_[skip] == '\r' || in_[skip] == '\n')) {
        ++skip;
      }
      in_.erase(0, skip);
      if (!in_.empty() && !started) {
        started = true;
        deadline = std::min(deadline, MonotonicNow() + kStallTimeout);
      }
      const size_t crlf = in_.find("\r\n\r\n");
      const size_t lf = in_.find("\n\n");
      if (crlf != std::string::npos && (lf == std::string::npos || crlf < lf)) {
        head_end = crlf;
        body_start = crlf + 4;
      } else if (lf != std::string::npos) {
        head_end = lf;
        body_start = lf + 2;
      }
      if (head_end != std::string::npos) break;
      if (in_.size() > kMaxHeaderBytes) {
        return RespondText(431, "431 Request Header Fields Too Large", true);
      }
      const absl::Duration left = deadline - MonotonicNow();
      Fill f = left > absl::ZeroDuration() ? More(left) : Fill::kTimeout;
      if (f == Fill::kClosed) return false;
      if (f == Fill::kTimeout) {
        if (!started) return false;  // an idle keep-alive connection
        return RespondText(408, "408 Request Timeout", true);
      }
    }
    if (head_end > kMaxHeaderBytes) {
      return RespondText(431, "431 Request Header Fields Too Large", true);
    }
    std::vector<absl::string_view> lines =
        absl::StrSplit(absl::string_view(in_).substr(0, head_end), '\n');
    for (absl::string_view& l : lines) absl::ConsumeSuffix(&l, "\r");
    std::vector<absl::string_view> first =
        absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
    if (first.size() != 3) {
      return RespondText(400, "400 Bad Request: malformed request line", true);
    }
    req->method = std::string(first[0]);
    if (first[2] == "HTTP/1.1") {
      http11_ = true;
    } else if (first[2] == "HTTP/1.0") {
      http11_ = false;
    } else if (absl::StartsWith(first[2], "HTTP/")) {
      return RespondText(505, "505 HTTP Version Not Supported", true);
    } else {
      return RespondText(400, "400 Bad Request: malformed request line", true);
    }
    absl::string_view target = first[1];
    if (size_t q = target.find('?'); q != absl::string_view::npos) {
      req->query = std::string(target.substr(q + 1));
      target = target.substr(0, q);
    }
    req->path = std::string(target);
    for (size_t i = 1; i < lines.size(); ++i) {
      absl::string_view l = lines[i];
      const size_t colon = l.find(':');
      if (colon == absl::string_view::npos || colon == 0 || l[0] == ' ' ||
          l[0] == '\t') {
        return RespondText(400, "400 Bad Request: malformed header line", true);
      }
      std::string name = absl::AsciiStrToLower(l.substr(0, colon));
      std::string value(absl::StripAsciiWhitespace(l.substr(colon + 1)));
      auto [it, inserted] = req->headers.emplace(name, value);
      if (!inserted) absl::StrAppend(&it->second, ", ", value);
    }
    const std::string connection =
        absl::AsciiStrToLower(Header(*req, "connection"));
    keep_alive_ = http11_ ? !absl::StrContains(connection, "close")
                          : absl::StrContains(connection, "keep-alive");
    in_.erase(0, body_start);
    return ReadBody(req);
  }

  static std::string Header(const Request& req, const std::string& name) {
    auto it = req.headers.find(name);
    return it == req.headers.end() ? "" : it->second;
  }

  // Reads the body (Content-Length or chunked) into req->body.
  bool ReadBody(Request* req) {
    const std::string te =
        absl::AsciiStrToLower(Header(*req, "transfer-encoding"));
    const std::string cl = Header(*req, "content-length");
    const bool chunked = !te.empty();
    if (chunked && te != "chunked") {
      return RespondText(501, "501 Not Implemented: transfer encoding " + te,
                         true);
    }
    if (chunked && !cl.empty()) {
      return RespondText(
          400, "400 Bad Request: both Content-Length and Transfer-Encoding",
          true);
    }
    uint64_t length = 0;
    if (!cl.empty() && !absl::SimpleAtoi(cl, &length)) {
      return RespondText(400, "400 Bad Request: bad Content-Length", true);
    }
    const size_t limit = gw_->max_body_bytes_;
    if (length > limit) return TooLarge();
    if ((chunked || length > 0) && http11_ &&
        absl::EqualsIgnoreCase(Header(*req, "expect"), "100-continue")) {
      if (!WriteAll("HTTP/1.1 100 Continue\r\n\r\n")) return false;
    }
    if (!chunked) {
      while (in_.size() < length) {
        Fill f = More(kStallTimeout);
        if (f == Fill::kClosed) return false;
        if (f == Fill::kTimeout) {
          return RespondText(408, "408 Request Timeout", true);
        }
      }
      req->body = in_.substr(0, length);
      in_.erase(0, length);
      return true;
    }
    // Chunked: size line, data, CRLF ... a zero size, trailers, empty line.
    size_t pos = 0;
    auto need_line = [&](size_t from, size_t* eol) {
      while ((*eol = in_.find('\n', from)) == std::string::npos) {
        if (in_.size() - from > kMaxHeaderBytes) return false;
        if (More(kStallTimeout) != Fill::kOk) return false;
      }
      return true;
    };
    while (true) {
      size_t eol;
      if (!need_line(pos, &eol)) {
        return RespondText(400, "400 Bad Request: bad chunked body", true);
      }
      absl::string_view size_line(in_.data() + pos, eol - pos);
      absl::ConsumeSuffix(&size_line, "\r");
      size_line = size_line.substr(0, size_line.find(';'));
      size_t chunk = 0;
      if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(size_line), &chunk)) {
        return RespondText(400, "400 Bad Request: bad chunk size", true);
      }
      pos = eol + 1;
      if (chunk == 0) {
        // Trailers, up to an empty line.
        while (true) {
          if (!need_line(pos, &eol)) {
            return RespondText(400, "400 Bad Request: bad chunked body", true);
          }
          const bool empty = eol == pos || (eol == pos + 1 && in_[pos] == '\r');
          pos = eol + 1;
          if (empty) break;
        }
        in_.erase(0, pos);
        return true;
      }
      if (chunk > limit - req->body.size()) return TooLarge();
      while (in_.size() < pos + chunk + 1) {
        if (More(kStallTimeout) != Fill::kOk) {
          return RespondText(400, "400 Bad Request: bad chunked body", true);
        }
      }
      req->body.append(in_, pos, chunk);
      pos += chunk;
      if (!need_line(pos, &eol)) {
        return RespondText(400, "400 Bad Request: bad chunked body", true);
      }
      pos = eol + 1;
    }
  }

  // Answered before the body is read (a client waiting for "100 Continue"
  // never sends it); the connection closes.
  bool TooLarge() {
    return Respond(
        413, "application/json",
        ErrorBody(grpc::Status(
            grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat("request body larger than ", gw_->max_body_bytes_,
                         " bytes (twice --max-request-bytes, for base64, plus "
                         "64 KiB): send less per request"))),
        true);
  }

  // Answers one request. Returns whether the connection may go on.
  bool Handle(const Request& req) {
    if (metrics_only_ && req.path != "/health" && req.path != "/metrics") {
      return RespondText(404, "404 page not found", false);
    }
    std::string path = req.path;
    if (absl::StartsWith(path, "/v3beta/")) {
      path = absl::StrCat("/v3/", path.substr(8));
    }
    if (req.method == "OPTIONS") {  // a browser's CORS preflight
      return Respond(200, "text/plain; charset=utf-8", "", false);
    }
    if (path == "/health") return Health(req);
    if (path == "/metrics") return Metrics(req);
    if (path == "/version") {
      if (req.method != "GET") {
        return RespondText(405, "Method Not Allowed", false, "Allow: GET\r\n");
      }
      return Respond(
          200, "application/json",
          absl::StrCat("{\"etcdserver\":", JsonString(gw_->server_version_),
                       ",\"etcdcluster\":", JsonString(gw_->cluster_version_),
                       "}"),
          false);
    }
    auto it = gw_->routes_.find(path);
    if (it == gw_->routes_.end()) {
      return RespondText(404, "404 page not found", false);
    }
    if (req.method != "POST") {
      return RespondText(405, "Method Not Allowed", false, "Allow: POST\r\n");
    }
    std::shared_ptr<grpc::Channel> channel = gw_->channel_();
    if (channel == nullptr) {
      return RespondError(
          grpc::Status(grpc::StatusCode::UNAVAILABLE,
                       "etcdserver: this member is not serving clients now "
                       "(starting or stopping); try another member"),
          true);
    }
    const pb::MethodDescriptor* m = it->second;
    if (m->client_streaming() || m->server_streaming()) {
      return Stream(req, channel, m);
    }
    return Unary(req, channel, m);
  }

  // Parses the body's JSON objects into requests of `m`'s type.
  grpc::Status ParseRequests(const Request& req, const pb::MethodDescriptor* m,
                             std::vector<std::unique_ptr<pb::Message>>* out) {
    std::vector<absl::string_view> objects;
    if (!SplitJsonObjects(req.body, &objects)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the request body is not a JSON object");
    }
    const pb::Message* prototype =
        pb::MessageFactory::generated_factory()->GetPrototype(m->input_type());
    // An empty body is an empty request, as in etcd's gateway.
    if (objects.empty()) objects.push_back("{}");
    pb::util::JsonParseOptions opts;
    opts.ignore_unknown_fields = true;
    for (absl::string_view o : objects) {
      std::unique_ptr<pb::Message> msg(prototype->New());
      auto st = pb::util::JsonStringToMessage(
          pb::StringPiece(o.data(), o.size()), msg.get(), opts);
      if (!st.ok()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            std::string(st.message()));
      }
      out->push_back(std::move(msg));
    }
    return grpc::Status::OK;
  }

  static std::string GrpcMethod(const pb::MethodDescriptor* m) {
    return absl::StrCat("/", m->service()->full_name(), "/", m->name());
  }

  std::string ToJson(const grpc::ByteBuffer& buf, const pb::MethodDescriptor* m,
                     grpc::Status* status) {
    std::unique_ptr<pb::Message> resp(pb::MessageFactory::generated_factory()
                                          ->GetPrototype(m->output_type())
                                          ->New());
    std::string json;
    if (!FromBuffer(buf, resp.get())) {
      *status = grpc::Status(grpc::StatusCode::INTERNAL,
                             "cannot parse the member's response");
      return json;
    }
    pb::util::JsonPrintOptions opts;
    opts.preserve_proto_field_names = true;
    auto st = pb::util::MessageToJsonString(*resp, &json, opts);
    if (!st.ok()) {
      *status =
          grpc::Status(grpc::StatusCode::INTERNAL, std::string(st.message()));
    }
    return json;
  }

  bool Unary(const Request& req, const std::shared_ptr<grpc::Channel>& channel,
             const pb::MethodDescriptor* m) {
    std::vector<std::unique_ptr<pb::Message>> requests;
    if (grpc::Status st = ParseRequests(req, m, &requests); !st.ok()) {
      return RespondError(st, false);
    }
    if (requests.size() != 1) {
      return RespondError(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                       "the request body holds more than one JSON object"),
          false);
    }
    grpc::GenericStub stub(channel);
    grpc::ClientContext ctx;
    grpc::ByteBuffer request = ToBuffer(*requests[0]);
    grpc::ByteBuffer response;
    grpc::Status status;
    Signal done;
    stub.UnaryCall(&ctx, GrpcMethod(m), grpc::StubOptions(), &request,
                   &response, [&status, &done](grpc::Status s) {
                     status = std::move(s);
                     done.Notify();
                   });
    if (WaitUnlessHangup(fd_, done, [&ctx] { ctx.TryCancel(); })) {
      return false;  // nobody is left to answer
    }
    if (!status.ok()) return RespondError(status, false);
    std::string json = ToJson(response, m, &status);
    if (!status.ok()) return RespondError(status, false);
    return Respond(200, "application/json", json, false);
  }

  // A streamed answer is chunked; to an HTTP/1.0 client it is sent as is,
  // and the connection closes after it.
  bool WriteStreamHead() {
    return WriteAll(absl::StrCat(
        "HTTP/1.1 200 OK\r\n", CommonHeaders(),
        "Content-Type: application/json\r\n",
        http11_ ? "Transfer-Encoding: chunked\r\n" : "Connection: close\r\n",
        "\r\n"));
  }

  bool WriteChunk(absl::string_view data) {
    if (!http11_) return WriteAll(data);
    return WriteAll(absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n"));
  }

  // Ends a streamed answer. Returns whether the connection may go on.
  bool EndStream() {
    if (!http11_) return false;
    return WriteAll("0\r\n\r\n") && keep_alive_;
  }

  bool Stream(const Request& req, const std::shared_ptr<grpc::Channel>& channel,
              const pb::MethodDescriptor* m) {
    std::vector<std::unique_ptr<pb::Message>> requests;
    if (grpc::Status st = ParseRequests(req, m, &requests); !st.ok()) {
      return RespondError(st, false);
    }
    // A watch stays open after its requests, as etcd's server keeps it open
    // when the gateway half-closes; the other streams end once answered.
    const bool keep_open = m->full_name() == "etcdserverpb.Watch.Watch";
    grpc::GenericStub stub(channel);
    grpc::ClientContext ctx;
    grpc::CompletionQueue cq;
    std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
        stub.PrepareCall(&ctx, GrpcMethod(m), &cq);
    void* tag;
    bool ok = false;
    auto step = [&cq, &tag, &ok]() { return cq.Next(&tag, &ok) && ok; };
    call->StartCall(nullptr);
    bool alive = step();
    for (size_t i = 0; alive && i < requests.size(); ++i) {
      call->Write(ToBuffer(*requests[i]), nullptr);
      alive = step();
    }
    if (alive && !keep_open) {
      call->WritesDone(nullptr);
      alive = step();
    }
    // From here the client's hang-up cancels the call.
    Signal finished;
    std::thread watcher([this, &finished, &ctx] {
      WaitUnlessHangup(fd_, finished, [&ctx] { ctx.TryCancel(); });
    });
    bool wrote_head = false;
    bool client_ok = true;
    grpc::Status status;
    while (alive) {
      grpc::ByteBuffer buf;
      call->Read(&buf, nullptr);
      if (!step()) break;
      std::string json = ToJson(buf, m, &status);
      if (!status.ok()) {
        ctx.TryCancel();
        break;
      }
      if (!wrote_head) {
        client_ok = WriteStreamHead();
        wrote_head = true;
      }
      if (client_ok) {
        client_ok = WriteChunk(absl::StrCat("{\"result\":", json, "}\n"));
      }
      if (!client_ok) {
        ctx.TryCancel();
        break;
      }
    }
    grpc::Status call_status;
    call->Finish(&call_status, nullptr);
    cq.Next(&tag, &ok);
    if (status.ok()) status = call_status;
    finished.Notify();
    watcher.join();
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    if (!client_ok) return false;
    if (!status.ok()) {
      if (!wrote_head) return RespondError(status, false);
      client_ok = WriteChunk(StreamErrorBody(status));
    } else if (!wrote_head) {
      client_ok = WriteStreamHead();
    }
    return client_ok && EndStream();
  }

  bool Health(const Request& req) {
    if (req.method != "GET") {
      return RespondText(405, "Method Not Allowed", false, "Allow: GET\r\n");
    }
    std::vector<std::string> excluded;
    for (absl::string_view kv : absl::StrSplit(req.query, '&')) {
      if (absl::ConsumePrefix(&kv, "exclude=") && !kv.empty()) {
        excluded.emplace_back(kv);
      }
    }
    const bool healthy = CheckHealth(excluded);
    (healthy ? gw_->health_success_ : gw_->health_failures_)
        .fetch_add(1, std::memory_order_relaxed);
    if (!healthy) {
      return RespondText(503, "{\"health\":\"false\"}", false);
    }
    return Respond(200, "text/plain; charset=utf-8", "{\"health\":\"true\"}",
                   false);
  }

  // Prometheus' text format: the member's registry, which holds etcd's
  // metrics lockd has the figures for (see HttpGateway::Collect) and the
  // process's.
  bool Metrics(const Request& req) {
    if (req.method != "GET") {
      return RespondText(405, "Method Not Allowed", false, "Allow: GET\r\n");
    }
    return Respond(200, "text/plain; version=0.0.4; charset=utf-8",
                   gw_->registry_->Render(), false);
  }

  // etcd's checks: no alarm (but the excluded ones), a leader, and a
  // linearizable read within 1 s.
  bool CheckHealth(const std::vector<std::string>& excluded) {
    std::shared_ptr<grpc::Channel> channel = gw_->channel_();
    if (channel == nullptr) return false;
    auto deadline = [] {
      return std::chrono::system_clock::now() + std::chrono::seconds(1);
    };
    auto maintenance = etcdserverpb::Maintenance::NewStub(channel);
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(deadline());
      etcdserverpb::AlarmRequest areq;
      areq.set_action(etcdserverpb::AlarmRequest::GET);
      etcdserverpb::AlarmResponse aresp;
      if (!maintenance->Alarm(&ctx, areq, &aresp).ok()) return false;
      for (const etcdserverpb::AlarmMember& a : aresp.alarms()) {
        const std::string name = etcdserverpb::AlarmType_Name(a.alarm());
        if (std::find(excluded.begin(), excluded.end(), name) ==
            excluded.end()) {
          Logf(LogLevel::kWarning, "server", "/health error due to alarm %s",
               name);
          return false;
        }
      }
    }
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(deadline());
      etcdserverpb::StatusResponse sresp;
      if (!maintenance->Status(&ctx, etcdserverpb::StatusRequest(), &sresp)
               .ok() ||
          sresp.leader() == 0) {
        Logf(LogLevel::kWarning, "server", "/health error; no leader");
        return false;
      }
    }
    auto kv = etcdserverpb::KV::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    etcdserverpb::RangeRequest rreq;
    rreq.set_key("health");
    rreq.set_count_only(true);
    etcdserverpb::RangeResponse rresp;
    grpc::Status st = kv->Range(&ctx, rreq, &rresp);
    if (!st.ok()) {
      Logf(LogLevel::kWarning, "server", "/health error; read failed: %s",
           st.error_message());
      return false;
    }
    return true;
  }

  HttpGateway* gw_;
  const int fd_;
  const bool metrics_only_;
  std::string in_;
  // Of the request being answered (set by ReadRequest).
  bool http11_ = true;
  bool keep_alive_ = true;
};

HttpGateway::HttpGateway(ChannelSource channel, size_t max_request_bytes,
                         std::string server_version,
                         std::string cluster_version,
                         metrics::Registry* registry)
    : channel_(std::move(channel)),
      max_body_bytes_(2 * max_request_bytes + 64 * 1024),
      server_version_(std::move(server_version)),
      cluster_version_(std::move(cluster_version)),
      registry_(registry) {
  registry_->AddCollector([this](metrics::Sink& sink) { Collect(sink); });
  // The services' descriptors are in the generated pool once their code is
  // linked in; these references make sure it is.
  (void)etcdserverpb::KV::service_full_name();
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  for (const auto& r : kRoutes) {
    const pb::MethodDescriptor* m = pool->FindMethodByName(r.method);
    if (m == nullptr) {
      Logf(LogLevel::kError, "server",
           "HTTP gateway: method %s is not linked in; %s answers 404", r.method,
           r.path);
      continue;
    }
    routes_[r.path] = m;
  }
}

HttpGateway::~HttpGateway() = default;

void HttpGateway::Collect(metrics::Sink& sink) {
  etcdserverpb::StatusResponse st;
  bool have_status = false;
  if (std::shared_ptr<grpc::Channel> channel = channel_()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(1));
    have_status = etcdserverpb::Maintenance::NewStub(channel)
                      ->Status(&ctx, etcdserverpb::StatusRequest(), &st)
                      .ok();
  }
  if (have_status) {
    const uint64_t self = st.header().member_id();
    sink.Gauge("etcd_cluster_version",
               "Which version is running. 1 for 'cluster_version' label with "
               "current cluster version",
               {{"cluster_version", kEtcdApiMajorMinor}}, 1);
    sink.Gauge("etcd_debugging_mvcc_current_revision",
               "The current revision of store.", {}, st.header().revision());
    sink.Gauge("etcd_mvcc_db_total_size_in_bytes",
               "Total size of the underlying database physically allocated "
               "in bytes.",
               {}, st.dbsize());
    sink.Gauge("etcd_mvcc_db_total_size_in_use_in_bytes",
               "Total size of the underlying database logically in use in "
               "bytes.",
               {}, st.dbsizeinuse());
    sink.Gauge("etcd_server_has_leader",
               "Whether or not a leader exists. 1 is existence, 0 is not.", {},
               st.leader() != 0 ? 1 : 0);
    sink.Gauge("etcd_server_id",
               "Server or member ID in hexadecimal format. 1 for 'server_id' "
               "label with current ID.",
               {{"server_id", absl::StrFormat("%x", self)}}, 1);
    sink.Gauge("etcd_server_is_leader",
               "Whether or not this member is a leader. 1 if is, 0 otherwise.",
               {}, st.leader() == self ? 1 : 0);
    sink.Gauge("etcd_server_is_learner",
               "Whether or not this member is a learner. 1 if is, 0 "
               "otherwise.",
               {}, st.islearner() ? 1 : 0);
    sink.Gauge("etcd_server_proposals_applied_total",
               "The total number of consensus proposals applied.", {},
               st.raftappliedindex());
    sink.Gauge("etcd_server_proposals_committed_total",
               "The total number of consensus proposals committed.", {},
               st.raftindex());
  }
  sink.Counter("etcd_server_health_failures",
               "The total number of failed health checks", {},
               health_failures_.load(std::memory_order_relaxed));
  sink.Counter("etcd_server_health_success",
               "The total number of successful health checks", {},
               health_success_.load(std::memory_order_relaxed));
  sink.Gauge("etcd_server_version",
             "Which version is running. 1 for 'server_version' label with "
             "current version.",
             {{"server_version", server_version_}}, 1);
  CollectProcessMetrics(sink);
}

void HttpGateway::Serve(int fd, const std::string& peer, bool metrics_only) {
  Logf(LogLevel::kDebug, "server", "HTTP connection from %s", peer);
  Connection(this, fd, metrics_only).Run();
}

}  // namespace lockd
