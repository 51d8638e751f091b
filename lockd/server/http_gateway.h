// HTTP/1.x on the client port, as etcd 3.4 serves it beside gRPC:
//
//   GET  /health     {"health":"true"} (200), or {"health":"false"} (503)
//                    when an alarm is raised (those named by ?exclude=NAME
//                    aside), the member knows no leader, or a linearizable
//                    read does not complete within 1 s.
//   GET  /version    {"etcdserver":"3.5.0","etcdcluster":"3.5.0"}
//   GET  /metrics    Prometheus' text format: etcd's metrics lockd has the
//                    figures for (etcd_server_has_leader, is_leader,
//                    proposals committed/applied, health checks, db size,
//                    current revision, versions, member ID), under etcd's
//                    names and types, and the process_* ones.
//   POST /v3/...     the JSON gateway (grpc-gateway's mapping, as etcd's):
//                    /v3/kv/range, /v3/kv/put, /v3/watch, /v3/lease/grant,
//                    /v3/cluster/member/list, ... (the table is in the .cc).
//                    /v3beta/... is the same (etcd 3.4 rewrites it too).
//
// The gateway's JSON is the proto3 mapping with the .proto field names:
// 64-bit integers as strings, bytes in base64, enums by name, fields with
// default values left out; unknown request fields are ignored. A unary call
// answers its response object; a failed one answers the gRPC status mapped
// to HTTP (e.g. NOT_FOUND -> 404) with {"error":..., "message":...,
// "code":...}. A streaming call (watch, lease keep-alive, election observe,
// snapshot) takes its request messages from the body, one JSON object after
// another, and answers chunked, one {"result":{...}} per line, ending with
// {"error":{"grpc_code":..., "http_code":..., "message":...,
// "http_status":...}} if the call fails. A watch stays open until the
// client disconnects; the other streams end once their requests are
// answered, as in etcd.
//
// Calls go to the member's own gRPC services through an in-process channel,
// so they behave exactly as the same calls over gRPC. A call ends (is
// cancelled) when its client disconnects.
//
// Limits: request line and headers 64 KiB (431), body twice
// --max-request-bytes plus 64 KiB, for base64's growth (413); an idle
// connection is closed after 5 minutes, a request whose headers or body
// stall for 30 s is answered 408.
#ifndef LOCKD_SERVER_HTTP_GATEWAY_H_
#define LOCKD_SERVER_HTTP_GATEWAY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "lockd/util/metrics.h"

namespace google {
namespace protobuf {
class MethodDescriptor;
}  // namespace protobuf
}  // namespace google

namespace grpc {
class Channel;
}  // namespace grpc

namespace lockd {

class HttpGateway {
 public:
  // A channel to the member's current client gRPC server (null while there
  // is none).
  using ChannelSource = std::function<std::shared_ptr<grpc::Channel>()>;

  static constexpr size_t kMaxHeaderBytes = 64 * 1024;
  static constexpr absl::Duration kIdleTimeout = absl::Minutes(5);
  static constexpr absl::Duration kStallTimeout = absl::Seconds(30);

  // `registry` must outlive the gateway, and is not rendered after it is
  // gone: the gateway adds its own figures to it (member status, /health's
  // outcomes, the process's) and serves it on /metrics.
  HttpGateway(ChannelSource channel, size_t max_request_bytes,
              std::string server_version, std::string cluster_version,
              metrics::Registry* registry);
  ~HttpGateway();
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;

  // Serves HTTP/1.x requests on `fd` (a connected, non-blocking socket) until
  // the client closes it, an error, or a request that ends the connection.
  // Does not close `fd`. `metrics_only` (a --listen-metrics-urls listener):
  // only GET /metrics and /health, anything else 404, as etcd's.
  void Serve(int fd, const std::string& peer, bool metrics_only = false);

 private:
  class Connection;
  void Collect(metrics::Sink& sink);

  ChannelSource channel_;
  const size_t max_body_bytes_;
  const std::string server_version_;
  const std::string cluster_version_;
  // /health's outcomes, for /metrics.
  std::atomic<uint64_t> health_success_{0};
  std::atomic<uint64_t> health_failures_{0};
  metrics::Registry* const registry_;
  // URL path -> the method it calls.
  std::map<std::string, const google::protobuf::MethodDescriptor*> routes_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_HTTP_GATEWAY_H_
