#include "lockd/server/grpc_metrics.h"

#include <google/protobuf/descriptor.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/interceptor.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace lockd {
namespace {

using grpc::experimental::InterceptionHookPoints;

constexpr char kStartedName[] = "grpc_server_started_total";
constexpr char kStartedHelp[] = "Total number of RPCs started on the server.";
constexpr char kHandledName[] = "grpc_server_handled_total";
constexpr char kHandledHelp[] =
    "Total number of RPCs completed on the server, regardless of success or "
    "failure.";
constexpr char kReceivedName[] = "grpc_server_msg_received_total";
constexpr char kReceivedHelp[] =
    "Total number of RPC stream messages received on the server.";
constexpr char kSentName[] = "grpc_server_msg_sent_total";
constexpr char kSentHelp[] =
    "Total number of gRPC stream messages sent by the server.";
constexpr char kClientRequestsName[] = "etcd_server_client_requests_total";
constexpr char kClientRequestsHelp[] =
    "The total number of client requests per client version.";

constexpr char kClientApiVersionKey[] = "client-api-version";
constexpr char kNoVersion[] = "unknown";
constexpr char kOtherVersion[] = "other";
constexpr size_t kClientApiVersionBytesMax = 32;

// Go's codes.Code.String(), indexed by the code's number.
constexpr int kCodes = 17;
constexpr const char* kCodeNames[kCodes] = {
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
};
static_assert(grpc::StatusCode::UNAUTHENTICATED == kCodes - 1,
              "gRPC's status codes are 0..16");

enum class RpcType { kUnary, kClientStream, kServerStream, kBidiStream };

const char* TypeName(RpcType type) {
  switch (type) {
    case RpcType::kUnary:
      return "unary";
    case RpcType::kClientStream:
      return "client_stream";
    case RpcType::kServerStream:
      return "server_stream";
    case RpcType::kBidiStream:
      return "bidi_stream";
  }
  std::abort();
}

// Served by gRPC's C++ server itself; their .proto is not linked into it.
struct BuiltinMethod {
  const char* service;
  const char* method;
  RpcType type;
};
constexpr BuiltinMethod kBuiltinMethods[] = {
    {"grpc.health.v1.Health", "Check", RpcType::kUnary},
    {"grpc.health.v1.Health", "Watch", RpcType::kServerStream},
};

// The kind of `service`'s `method`, if it is a known method.
std::optional<RpcType> KnownMethodType(absl::string_view service,
                                       absl::string_view method) {
  for (const BuiltinMethod& b : kBuiltinMethods) {
    if (service == b.service && method == b.method) return b.type;
  }
  const google::protobuf::MethodDescriptor* d =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
          absl::StrCat(service, ".", method));
  if (d == nullptr) return std::nullopt;
  if (d->client_streaming()) {
    return d->server_streaming() ? RpcType::kBidiStream
                                 : RpcType::kClientStream;
  }
  return d->server_streaming() ? RpcType::kServerStream : RpcType::kUnary;
}

// A method's series, resolved once per method: a call only increments.
struct MethodCounters {
  metrics::Counter* started = nullptr;
  metrics::Counter* msg_received = nullptr;
  metrics::Counter* msg_sent = nullptr;
  metrics::Counter* handled[kCodes] = {};
  bool unary = false;
};

// The series of `full_method` ("/package.Service/Method"), created if
// new, or nullopt if it is not a known method.
std::optional<MethodCounters> ResolveMethod(metrics::Registry* registry,
                                            absl::string_view full_method) {
  if (!absl::ConsumePrefix(&full_method, "/")) return std::nullopt;
  const size_t slash = full_method.find('/');
  if (slash == absl::string_view::npos) return std::nullopt;
  const absl::string_view service = full_method.substr(0, slash);
  const absl::string_view method = full_method.substr(slash + 1);
  const std::optional<RpcType> type = KnownMethodType(service, method);
  if (!type.has_value()) return std::nullopt;

  const metrics::Labels labels = {{"grpc_method", std::string(method)},
                                  {"grpc_service", std::string(service)},
                                  {"grpc_type", TypeName(*type)}};
  MethodCounters c;
  c.started = registry->GetCounter(kStartedName, kStartedHelp, labels);
  c.msg_received = registry->GetCounter(kReceivedName, kReceivedHelp, labels);
  c.msg_sent = registry->GetCounter(kSentName, kSentHelp, labels);
  metrics::Labels with_code = labels;
  with_code.insert(with_code.begin(), {"grpc_code", ""});
  for (int code = 0; code < kCodes; ++code) {
    with_code[0].second = kCodeNames[code];
    c.handled[code] =
        registry->GetCounter(kHandledName, kHandledHelp, with_code);
  }
  c.unary = *type == RpcType::kUnary;
  return c;
}

bool PlausibleVersion(absl::string_view v) {
  if (v.size() > kClientApiVersionBytesMax) return false;
  for (char ch : v) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '.' &&
        ch != '_' && ch != '+' && ch != '-') {
      return false;
    }
  }
  return true;
}

class GrpcMetricsFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit GrpcMetricsFactory(metrics::Registry* registry)
      : registry_(registry) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

  // etcd_server_client_requests_total's series for a call of that kind
  // from a client of `version` (after etcd's "unknown" rule).
  metrics::Counter* ClientRequests(bool unary, absl::string_view version);

 private:
  // The series of `full_method`, or null if it is not a known method.
  const MethodCounters* Method(absl::string_view full_method);

  metrics::Registry* const registry_;
  absl::Mutex mu_;
  // Bounded: only known methods get an entry.
  absl::flat_hash_map<std::string, std::unique_ptr<MethodCounters>> methods_
      ABSL_GUARDED_BY(mu_);
  // Indexed by unary (1) or stream (0); null until that kind is counted, so
  // only series etcd would show exist. At most
  // kGrpcMetricsClientApiVersionsMax entries, plus kOtherVersion.
  absl::flat_hash_map<std::string,
                      std::pair<metrics::Counter*, metrics::Counter*>>
      versions_ ABSL_GUARDED_BY(mu_);
};

// One call's view of its metrics. Hooks of one call may run concurrently
// on different threads (a bidi call's read and write completions); the
// fields they share are atomic. POST_RECV_INITIAL_METADATA runs before any
// other hook and POST_RECV_CLOSE once, before destruction (gRPC sequences
// them), so `started_` and `handled_` need no atomics.
class GrpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  GrpcMetricsInterceptor(GrpcMetricsFactory* factory,
                         grpc::experimental::ServerRpcInfo* info,
                         const MethodCounters& counters)
      : factory_(factory), info_(info), counters_(counters) {}

  ~GrpcMetricsInterceptor() override {
    // The call ended without its end at the transport being seen (no
    // POST_RECV_CLOSE); still count it once, so handled adds up to
    // started.
    if (started_ && !handled_) {
      counters_.handled[grpc::StatusCode::CANCELLED]->Inc();
    }
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      started_ = true;
      counters_.started->Inc();
      factory_
          ->ClientRequests(counters_.unary,
                           ClientApiVersion(*methods->GetRecvInitialMetadata()))
          ->Inc();
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      counters_.msg_received->Inc();
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_SEND_MESSAGE) &&
        methods->GetSendMessageStatus()) {
      counters_.msg_sent->Inc();
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      sent_code_.store(methods->GetSendStatus().error_code(),
                       std::memory_order_release);
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_CLOSE)) {
      handled_ = true;
      counters_.handled[HandledCode()]->Inc();
    }
    methods->Proceed();
  }

 private:
  static absl::string_view ClientApiVersion(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
    // The first value, as etcd takes; keys arrive lower-cased.
    auto it = metadata.lower_bound(kClientApiVersionKey);
    if (it == metadata.end() || it->first != kClientApiVersionKey) {
      return kNoVersion;
    }
    return absl::string_view(it->second.data(), it->second.size());
  }

  // At POST_RECV_CLOSE: what the client saw.
  int HandledCode() const {
    const int sent = sent_code_.load(std::memory_order_acquire);
    bool cancelled = sent < 0;
    if (!cancelled) {
      // Safe for callback-API calls only (see the header).
      auto* callback_ctx =
          dynamic_cast<grpc::CallbackServerContext*>(info_->server_context());
      cancelled = callback_ctx != nullptr && callback_ctx->IsCancelled();
    }
    if (cancelled) return grpc::StatusCode::CANCELLED;
    return sent < kCodes ? sent : grpc::StatusCode::UNKNOWN;
  }

  GrpcMetricsFactory* const factory_;  // only in the first hook
  grpc::experimental::ServerRpcInfo* const info_;
  // A copy: the registry's counters outlive the call; the factory's map
  // need not be consulted again.
  const MethodCounters counters_;
  bool started_ = false;
  bool handled_ = false;
  // The code of the status the server sent, or -1 before it sent one.
  std::atomic<int> sent_code_{-1};
};

grpc::experimental::Interceptor* GrpcMetricsFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  if (info->method() == nullptr) return nullptr;
  const MethodCounters* counters = Method(info->method());
  if (counters == nullptr) return nullptr;
  return new GrpcMetricsInterceptor(this, info, *counters);
}

const MethodCounters* GrpcMetricsFactory::Method(
    absl::string_view full_method) {
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = methods_.find(full_method);
    if (it != methods_.end()) return it->second.get();
  }
  // Unknown paths are looked up each time rather than remembered, so
  // clients cannot grow the map.
  std::optional<MethodCounters> resolved =
      ResolveMethod(registry_, full_method);
  if (!resolved.has_value()) return nullptr;
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = methods_.try_emplace(std::string(full_method));
  if (inserted) it->second = std::make_unique<MethodCounters>(*resolved);
  return it->second.get();
}

metrics::Counter* GrpcMetricsFactory::ClientRequests(
    bool unary, absl::string_view version) {
  if (!PlausibleVersion(version)) version = kOtherVersion;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = versions_.find(version);
    if (it != versions_.end()) {
      metrics::Counter* c = unary ? it->second.first : it->second.second;
      if (c != nullptr) return c;
    }
  }
  absl::MutexLock lock(&mu_);
  auto it = versions_.find(version);
  if (it == versions_.end()) {
    const size_t versions = versions_.size() - versions_.count(kOtherVersion);
    if (versions >= kGrpcMetricsClientApiVersionsMax &&
        version != kOtherVersion) {
      version = kOtherVersion;
      it = versions_.find(version);
    }
    if (it == versions_.end()) {
      it = versions_.try_emplace(std::string(version)).first;
    }
  }
  metrics::Counter*& c = unary ? it->second.first : it->second.second;
  if (c == nullptr) {
    c = registry_->GetCounter(kClientRequestsName, kClientRequestsHelp,
                              {{"client_api_version", std::string(version)},
                               {"type", unary ? "unary" : "stream"}});
  }
  return c;
}

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewGrpcMetricsInterceptorFactory(metrics::Registry* registry) {
  return std::make_unique<GrpcMetricsFactory>(registry);
}

void InitializeGrpcServiceMetrics(metrics::Registry* registry,
                                  absl::string_view service_full_name) {
  std::vector<std::string> paths;
  for (const BuiltinMethod& b : kBuiltinMethods) {
    if (service_full_name == b.service) {
      paths.push_back(absl::StrCat("/", b.service, "/", b.method));
    }
  }
  const google::protobuf::ServiceDescriptor* d =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(service_full_name));
  if (d != nullptr) {
    for (int i = 0; i < d->method_count(); ++i) {
      paths.push_back(
          absl::StrCat("/", service_full_name, "/", d->method(i)->name()));
    }
  }
  if (paths.empty()) {
    std::fprintf(stderr, "InitializeGrpcServiceMetrics: unknown service %s\n",
                 std::string(service_full_name).c_str());
    std::abort();
  }
  for (const std::string& path : paths) {
    if (!ResolveMethod(registry, path).has_value()) std::abort();
  }
}

}  // namespace lockd
