// The gRPC metrics interceptor on a real in-process server on 127.0.0.1:
// callback- and sync-API services of etcd's API, called over a real
// channel. Each test shuts its server down before reading the metrics: a
// shut-down server has run every hook of every call, so the values are
// final (handled is counted when a call ends at the transport, which can be
// after the client has its answer).
#include "lockd/server/grpc_metrics.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "lockd/util/metrics.h"
#include "raftpb/raft.grpc.pb.h"

namespace lockd {
namespace {

// KV on the callback API: Range answers OK, Put fails as etcd does for an
// empty key.
class TestKv final
    : public etcdserverpb::KV::WithCallbackMethod_Range<
          etcdserverpb::KV::WithCallbackMethod_Put<etcdserverpb::KV::Service>> {
 public:
  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx,
                                  const etcdserverpb::RangeRequest*,
                                  etcdserverpb::RangeResponse* resp) override {
    resp->set_count(1);
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx,
                                const etcdserverpb::PutRequest*,
                                etcdserverpb::PutResponse*) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "etcdserver: key is not provided"));
    return reactor;
  }
};

// Watch on the callback API: answers each request with one response and
// finishes with OK when reading ends, whether the client half-closed or
// went away (OnReadDone(false) does not tell which), as reactors commonly
// do.
class EchoReactor final
    : public grpc::ServerBidiReactor<etcdserverpb::WatchRequest,
                                     etcdserverpb::WatchResponse> {
 public:
  EchoReactor() { StartRead(&req_); }
  void OnReadDone(bool ok) override {
    if (!ok) {
      FinishOnce();
      return;
    }
    resp_.set_watch_id(req_.create_request().start_revision());
    StartWrite(&resp_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishOnce();
      return;
    }
    StartRead(&req_);
  }
  void OnCancel() override { FinishOnce(); }
  void OnDone() override { delete this; }

 private:
  void FinishOnce() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }
  std::mutex mu_;
  bool finished_ = false;
  etcdserverpb::WatchRequest req_;
  etcdserverpb::WatchResponse resp_;
};

class TestWatch final : public etcdserverpb::Watch::CallbackService {
 public:
  grpc::ServerBidiReactor<etcdserverpb::WatchRequest,
                          etcdserverpb::WatchResponse>*
  Watch(grpc::CallbackServerContext*) override {
    return new EchoReactor();
  }
};

// Lease on the sync API: a unary call and a bidi echo that, as lockd's
// sync handlers do, ends with CANCELLED when the call was cancelled.
class TestLease final : public etcdserverpb::Lease::Service {
 public:
  grpc::Status LeaseGrant(grpc::ServerContext*,
                          const etcdserverpb::LeaseGrantRequest* req,
                          etcdserverpb::LeaseGrantResponse* resp) override {
    resp->set_id(req->id());
    return grpc::Status::OK;
  }
  grpc::Status LeaseKeepAlive(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<etcdserverpb::LeaseKeepAliveResponse,
                               etcdserverpb::LeaseKeepAliveRequest>* stream)
      override {
    etcdserverpb::LeaseKeepAliveRequest req;
    while (stream->Read(&req)) {
      etcdserverpb::LeaseKeepAliveResponse resp;
      resp.set_id(req.id());
      if (!stream->Write(resp)) break;
    }
    if (ctx->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    return grpc::Status::OK;
  }
};

// Maintenance on the sync API: a server stream of three messages.
class TestMaintenance final : public etcdserverpb::Maintenance::Service {
 public:
  grpc::Status Snapshot(
      grpc::ServerContext*, const etcdserverpb::SnapshotRequest*,
      grpc::ServerWriter<etcdserverpb::SnapshotResponse>* writer) override {
    for (int i = 0; i < 3; ++i) {
      etcdserverpb::SnapshotResponse resp;
      resp.set_remaining_bytes(2 - i);
      if (!writer->Write(resp)) break;
    }
    return grpc::Status::OK;
  }
};

// A client stream on the sync API (the peer transport's snapshot upload).
class TestRaftTransport final : public raftpb::RaftTransport::Service {
 public:
  grpc::Status SendSnapshot(grpc::ServerContext*,
                            grpc::ServerReader<raftpb::SnapshotChunk>* reader,
                            raftpb::SnapshotAck*) override {
    raftpb::SnapshotChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return grpc::Status::OK;
  }
};

// Series of grpc_server_handled_total etc. as Render's lines give them.
std::string Series(absl::string_view name, absl::string_view method,
                   absl::string_view service, absl::string_view type,
                   absl::string_view code = "") {
  return absl::StrCat(
      name, "{", code.empty() ? "" : absl::StrCat("grpc_code=\"", code, "\","),
      "grpc_method=\"", method, "\",grpc_service=\"", service,
      "\",grpc_type=\"", type, "\"}");
}

std::string ClientRequests(absl::string_view version, absl::string_view type) {
  return absl::StrCat("etcd_server_client_requests_total{client_api_version=\"",
                      version, "\",type=\"", type, "\"}");
}

class GrpcMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&kv_);
    builder.RegisterService(&watch_);
    builder.RegisterService(&lease_);
    builder.RegisterService(&maintenance_);
    builder.RegisterService(&raft_);
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        creators;
    creators.push_back(NewGrpcMetricsInterceptorFactory(&registry_));
    builder.experimental().SetInterceptorCreators(std::move(creators));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                   grpc::InsecureChannelCredentials());
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  // Shuts the server down (every call's hooks have run then) and returns
  // the rendered series by name and labels, with Render's text in `text`.
  std::map<std::string, double> ShutDownAndRender(std::string* text = nullptr) {
    server_->Shutdown();
    server_.reset();
    const std::string rendered = registry_.Render();
    if (text != nullptr) *text = rendered;
    std::map<std::string, double> series;
    for (absl::string_view line : absl::StrSplit(rendered, '\n')) {
      if (line.empty() || line[0] == '#') continue;
      const size_t space = line.rfind(' ');
      series[std::string(line.substr(0, space))] =
          std::stod(std::string(line.substr(space + 1)));
    }
    return series;
  }

  static void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::seconds(20));
  }

  metrics::Registry registry_;
  TestKv kv_;
  TestWatch watch_;
  TestLease lease_;
  TestMaintenance maintenance_;
  TestRaftTransport raft_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(GrpcMetricsTest, UnaryCallbackCallsCountStartedHandledAndMessages) {
  auto kv = etcdserverpb::KV::NewStub(channel_);
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    etcdserverpb::RangeResponse resp;
    ASSERT_TRUE(kv->Range(&ctx, etcdserverpb::RangeRequest(), &resp).ok());
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  etcdserverpb::PutResponse put_resp;
  grpc::Status st = kv->Put(&ctx, etcdserverpb::PutRequest(), &put_resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  std::string text;
  std::map<std::string, double> s = ShutDownAndRender(&text);
  const std::string kv_service = "etcdserverpb.KV";
  EXPECT_EQ(
      s[Series("grpc_server_started_total", "Range", kv_service, "unary")], 2);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "Range", kv_service, "unary",
                     "OK")],
            2);
  EXPECT_EQ(
      s[Series("grpc_server_msg_received_total", "Range", kv_service, "unary")],
      2);
  EXPECT_EQ(
      s[Series("grpc_server_msg_sent_total", "Range", kv_service, "unary")], 2);
  EXPECT_EQ(s[Series("grpc_server_started_total", "Put", kv_service, "unary")],
            1);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "Put", kv_service, "unary",
                     "InvalidArgument")],
            1);
  EXPECT_EQ(
      s[Series("grpc_server_handled_total", "Put", kv_service, "unary", "OK")],
      0);
  EXPECT_EQ(
      s[Series("grpc_server_msg_received_total", "Put", kv_service, "unary")],
      1);
  // No response message with an error status (go-grpc-prometheus' rule).
  EXPECT_EQ(s[Series("grpc_server_msg_sent_total", "Put", kv_service, "unary")],
            0);

  // etcd's exact lines, headers included; every code's series exists.
  for (const char* expected : {
           "# HELP grpc_server_started_total Total number of RPCs started on "
           "the server.\n# TYPE grpc_server_started_total counter\n",
           "# HELP grpc_server_handled_total Total number of RPCs completed "
           "on the server, regardless of success or failure.\n# TYPE "
           "grpc_server_handled_total counter\n",
           "# HELP grpc_server_msg_received_total Total number of RPC stream "
           "messages received on the server.\n# TYPE "
           "grpc_server_msg_received_total counter\n",
           "# HELP grpc_server_msg_sent_total Total number of gRPC stream "
           "messages sent by the server.\n# TYPE grpc_server_msg_sent_total "
           "counter\n",
           "# HELP etcd_server_client_requests_total The total number of "
           "client requests per client version.\n# TYPE "
           "etcd_server_client_requests_total counter\n",
           "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\","
           "grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n",
           "grpc_server_handled_total{grpc_code=\"Unauthenticated\","
           "grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\","
           "grpc_type=\"unary\"} 0\n",
       }) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected;
  }
  int range_handled_series = 0;
  for (const auto& [key, value] : s) {
    if (key.rfind("grpc_server_handled_total{", 0) == 0 &&
        key.find("grpc_method=\"Range\"") != std::string::npos) {
      ++range_handled_series;
    }
  }
  EXPECT_EQ(range_handled_series, 17);
}

TEST_F(GrpcMetricsTest, ClientRequestsCountedPerClientApiVersion) {
  auto kv = etcdserverpb::KV::NewStub(channel_);
  auto range = [&](const char* version) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    if (version != nullptr) ctx.AddMetadata("client-api-version", version);
    etcdserverpb::RangeResponse resp;
    ASSERT_TRUE(kv->Range(&ctx, etcdserverpb::RangeRequest(), &resp).ok());
  };
  range("3.4");
  range("3.4");
  range("3.4");
  range(nullptr);
  range("");  // present but empty: etcd labels it "" too
  range("3.4 ; drop");
  range(std::string(33, '3').c_str());
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    ctx.AddMetadata("client-api-version", "3.5");
    auto watch = etcdserverpb::Watch::NewStub(channel_);
    auto stream = watch->Watch(&ctx);
    ASSERT_TRUE(stream->WritesDone());
    EXPECT_TRUE(stream->Finish().ok());
  }

  std::map<std::string, double> s = ShutDownAndRender();
  EXPECT_EQ(s[ClientRequests("3.4", "unary")], 3);
  EXPECT_EQ(s[ClientRequests("unknown", "unary")], 1);
  EXPECT_EQ(s[ClientRequests("", "unary")], 1);
  EXPECT_EQ(s[ClientRequests("other", "unary")], 2);
  EXPECT_EQ(s[ClientRequests("3.5", "stream")], 1);
  // Only kinds seen get a series, as in etcd.
  EXPECT_EQ(s.count(ClientRequests("3.4", "stream")), 0);
  EXPECT_EQ(s.count(ClientRequests("3.5", "unary")), 0);
}

TEST_F(GrpcMetricsTest, ClientApiVersionsBeyondTheLimitCountAsOther) {
  auto kv = etcdserverpb::KV::NewStub(channel_);
  const int versions = kGrpcMetricsClientApiVersionsMax + 4;
  // An implausible value first: "other" does not take a version's place.
  for (int i = -1; i < versions; ++i) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    ctx.AddMetadata("client-api-version",
                    i < 0 ? "not a version" : absl::StrCat("3.", i));
    etcdserverpb::RangeResponse resp;
    ASSERT_TRUE(kv->Range(&ctx, etcdserverpb::RangeRequest(), &resp).ok());
  }
  std::map<std::string, double> s = ShutDownAndRender();
  double total = 0;
  int series = 0;
  for (const auto& [key, value] : s) {
    if (key.rfind("etcd_server_client_requests_total{", 0) != 0) continue;
    ++series;
    total += value;
  }
  EXPECT_EQ(total, versions + 1);
  EXPECT_EQ(series, kGrpcMetricsClientApiVersionsMax + 1);
  EXPECT_EQ(s[ClientRequests("other", "unary")], 1 + 4);
  EXPECT_EQ(
      s[ClientRequests(absl::StrCat("3.", kGrpcMetricsClientApiVersionsMax - 1),
                       "unary")],
      1);
  EXPECT_EQ(s[ClientRequests("3.0", "unary")], 1);
}

TEST_F(GrpcMetricsTest, BidiCallbackStreamCountsEachMessage) {
  auto watch = etcdserverpb::Watch::NewStub(channel_);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = watch->Watch(&ctx);
  for (int i = 0; i < 2; ++i) {
    etcdserverpb::WatchRequest req;
    req.mutable_create_request()->set_start_revision(i);
    ASSERT_TRUE(stream->Write(req));
    etcdserverpb::WatchResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_EQ(resp.watch_id(), i);
  }
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());

  std::map<std::string, double> s = ShutDownAndRender();
  const std::string svc = "etcdserverpb.Watch";
  EXPECT_EQ(s[Series("grpc_server_started_total", "Watch", svc, "bidi_stream")],
            1);
  EXPECT_EQ(
      s[Series("grpc_server_msg_received_total", "Watch", svc, "bidi_stream")],
      2);
  EXPECT_EQ(
      s[Series("grpc_server_msg_sent_total", "Watch", svc, "bidi_stream")], 2);
  EXPECT_EQ(
      s[Series("grpc_server_handled_total", "Watch", svc, "bidi_stream", "OK")],
      1);
  EXPECT_EQ(s[ClientRequests("unknown", "stream")], 1);
}

double HandledTotal(const std::map<std::string, double>& s,
                    absl::string_view method) {
  double total = 0;
  for (const auto& [key, value] : s) {
    if (key.rfind("grpc_server_handled_total{", 0) == 0 &&
        key.find(absl::StrCat("grpc_method=\"", method, "\"")) !=
            std::string::npos) {
      total += value;
    }
  }
  return total;
}

TEST_F(GrpcMetricsTest, StreamCancelledByTheClientIsHandledOnceAsCanceled) {
  auto watch = etcdserverpb::Watch::NewStub(channel_);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = watch->Watch(&ctx);
  ASSERT_TRUE(stream->Write(etcdserverpb::WatchRequest()));
  etcdserverpb::WatchResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ctx.TryCancel();
  while (stream->Read(&resp)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // The reactor finished with OK after its read failed; the client never
  // saw that status.
  std::map<std::string, double> s = ShutDownAndRender();
  const std::string svc = "etcdserverpb.Watch";
  EXPECT_EQ(s[Series("grpc_server_started_total", "Watch", svc, "bidi_stream")],
            1);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "Watch", svc, "bidi_stream",
                     "Canceled")],
            1);
  EXPECT_EQ(HandledTotal(s, "Watch"), 1);
  EXPECT_EQ(
      s[Series("grpc_server_msg_received_total", "Watch", svc, "bidi_stream")],
      1);
}

// The deadline ends the call before the reactor finishes (the other order
// of the two hooks than in the test above).
TEST_F(GrpcMetricsTest, StreamPastItsDeadlineIsHandledOnceAsCanceled) {
  auto watch = etcdserverpb::Watch::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(300));
  auto stream = watch->Watch(&ctx);
  ASSERT_TRUE(stream->Write(etcdserverpb::WatchRequest()));
  etcdserverpb::WatchResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  // The server keeps the stream open; the deadline ends it.
  while (stream->Read(&resp)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  std::map<std::string, double> s = ShutDownAndRender();
  EXPECT_EQ(s[Series("grpc_server_handled_total", "Watch", "etcdserverpb.Watch",
                     "bidi_stream", "Canceled")],
            1);
  EXPECT_EQ(HandledTotal(s, "Watch"), 1);
}

TEST_F(GrpcMetricsTest, SyncApiCallsOfEveryKind) {
  {
    auto lease = etcdserverpb::Lease::NewStub(channel_);
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    etcdserverpb::LeaseGrantRequest req;
    req.set_id(7);
    etcdserverpb::LeaseGrantResponse resp;
    ASSERT_TRUE(lease->LeaseGrant(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.id(), 7);
  }
  {
    auto lease = etcdserverpb::Lease::NewStub(channel_);
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    auto stream = lease->LeaseKeepAlive(&ctx);
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(stream->Write(etcdserverpb::LeaseKeepAliveRequest()));
      etcdserverpb::LeaseKeepAliveResponse resp;
      ASSERT_TRUE(stream->Read(&resp));
    }
    ASSERT_TRUE(stream->WritesDone());
    EXPECT_TRUE(stream->Finish().ok());
  }
  {
    auto maintenance = etcdserverpb::Maintenance::NewStub(channel_);
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    auto reader = maintenance->Snapshot(&ctx, etcdserverpb::SnapshotRequest());
    etcdserverpb::SnapshotResponse resp;
    int read = 0;
    while (reader->Read(&resp)) ++read;
    EXPECT_EQ(read, 3);
    EXPECT_TRUE(reader->Finish().ok());
  }
  {
    auto raft = raftpb::RaftTransport::NewStub(channel_);
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    raftpb::SnapshotAck ack;
    auto writer = raft->SendSnapshot(&ctx, &ack);
    for (int i = 0; i < 4; ++i)
      ASSERT_TRUE(writer->Write(raftpb::SnapshotChunk()));
    ASSERT_TRUE(writer->WritesDone());
    EXPECT_TRUE(writer->Finish().ok());
  }

  std::map<std::string, double> s = ShutDownAndRender();
  const std::string lease = "etcdserverpb.Lease";
  EXPECT_EQ(s[Series("grpc_server_handled_total", "LeaseGrant", lease, "unary",
                     "OK")],
            1);
  EXPECT_EQ(
      s[Series("grpc_server_msg_sent_total", "LeaseGrant", lease, "unary")], 1);
  EXPECT_EQ(s[Series("grpc_server_started_total", "LeaseKeepAlive", lease,
                     "bidi_stream")],
            1);
  EXPECT_EQ(s[Series("grpc_server_msg_received_total", "LeaseKeepAlive", lease,
                     "bidi_stream")],
            3);
  EXPECT_EQ(s[Series("grpc_server_msg_sent_total", "LeaseKeepAlive", lease,
                     "bidi_stream")],
            3);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "LeaseKeepAlive", lease,
                     "bidi_stream", "OK")],
            1);
  const std::string maintenance = "etcdserverpb.Maintenance";
  EXPECT_EQ(s[Series("grpc_server_msg_received_total", "Snapshot", maintenance,
                     "server_stream")],
            1);
  EXPECT_EQ(s[Series("grpc_server_msg_sent_total", "Snapshot", maintenance,
                     "server_stream")],
            3);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "Snapshot", maintenance,
                     "server_stream", "OK")],
            1);
  const std::string raft = "lockd.raftpb.RaftTransport";
  EXPECT_EQ(s[Series("grpc_server_msg_received_total", "SendSnapshot", raft,
                     "client_stream")],
            4);
  EXPECT_EQ(s[Series("grpc_server_msg_sent_total", "SendSnapshot", raft,
                     "client_stream")],
            1);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "SendSnapshot", raft,
                     "client_stream", "OK")],
            1);
  EXPECT_EQ(s[ClientRequests("unknown", "unary")], 1);
  EXPECT_EQ(s[ClientRequests("unknown", "stream")], 3);
}

// A sync call counts its handler's status (gRPC gives an interceptor no
// safe way to ask a sync call whether it was cancelled); a handler that
// checks IsCancelled gets "Canceled".
TEST_F(GrpcMetricsTest, CancelledSyncStreamCountsItsHandlersStatus) {
  auto lease = etcdserverpb::Lease::NewStub(channel_);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = lease->LeaseKeepAlive(&ctx);
  ASSERT_TRUE(stream->Write(etcdserverpb::LeaseKeepAliveRequest()));
  etcdserverpb::LeaseKeepAliveResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ctx.TryCancel();
  while (stream->Read(&resp)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);

  std::map<std::string, double> s = ShutDownAndRender();
  EXPECT_EQ(s[Series("grpc_server_handled_total", "LeaseKeepAlive",
                     "etcdserverpb.Lease", "bidi_stream", "Canceled")],
            1);
  EXPECT_EQ(HandledTotal(s, "LeaseKeepAlive"), 1);
}

TEST_F(GrpcMetricsTest, UnknownPathsAreNotCountedUnservedKnownMethodsAre) {
  grpc::GenericStub generic(channel_);
  auto call = [&](const std::string& path) {
    grpc::CompletionQueue cq;
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    // An empty message (an empty HealthCheckRequest, say).
    grpc::Slice empty("");
    grpc::ByteBuffer req(&empty, 1);
    grpc::ByteBuffer resp;
    grpc::Status st;
    auto rpc = generic.PrepareUnaryCall(&ctx, path, req, &cq);
    rpc->StartCall();
    rpc->Finish(&resp, &st, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    return st;
  };
  EXPECT_EQ(call("/nope.Nope/Nope").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(call("/etcdserverpb.KV/Nope").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(call("no-slash").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // In the linked protos, not served here.
  EXPECT_EQ(call("/etcdserverpb.Auth/AuthStatus").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // Built into gRPC's server.
  grpc::Status health = call("/grpc.health.v1.Health/Check");
  EXPECT_TRUE(health.ok()) << health.error_code() << " "
                           << health.error_message();

  std::string text;
  std::map<std::string, double> s = ShutDownAndRender(&text);
  EXPECT_EQ(text.find("Nope"), std::string::npos) << text;
  EXPECT_EQ(text.find("no-slash"), std::string::npos) << text;
  EXPECT_EQ(s[Series("grpc_server_handled_total", "AuthStatus",
                     "etcdserverpb.Auth", "unary", "Unimplemented")],
            1);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "Check",
                     "grpc.health.v1.Health", "unary", "OK")],
            1);
  // Only the two counted calls count as client requests.
  EXPECT_EQ(s[ClientRequests("unknown", "unary")], 2);
}

TEST_F(GrpcMetricsTest, ConcurrentCallsAddUp) {
  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this] {
      auto kv = etcdserverpb::KV::NewStub(channel_);
      auto watch = etcdserverpb::Watch::NewStub(channel_);
      for (int i = 0; i < kCallsPerThread; ++i) {
        grpc::ClientContext ctx;
        SetDeadline(&ctx);
        etcdserverpb::RangeResponse resp;
        EXPECT_TRUE(kv->Range(&ctx, etcdserverpb::RangeRequest(), &resp).ok());
        grpc::ClientContext wctx;
        SetDeadline(&wctx);
        auto stream = watch->Watch(&wctx);
        EXPECT_TRUE(stream->Write(etcdserverpb::WatchRequest()));
        etcdserverpb::WatchResponse wresp;
        EXPECT_TRUE(stream->Read(&wresp));
        if (i % 2 == 0) {
          wctx.TryCancel();
        } else {
          EXPECT_TRUE(stream->WritesDone());
        }
        while (stream->Read(&wresp)) {
        }
        grpc::Status st = stream->Finish();
        if (i % 2 == 1) {
          EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  std::map<std::string, double> s = ShutDownAndRender();
  const double calls = kThreads * kCallsPerThread;
  EXPECT_EQ(s[Series("grpc_server_started_total", "Range", "etcdserverpb.KV",
                     "unary")],
            calls);
  EXPECT_EQ(HandledTotal(s, "Range"), calls);
  EXPECT_EQ(s[Series("grpc_server_started_total", "Watch", "etcdserverpb.Watch",
                     "bidi_stream")],
            calls);
  EXPECT_EQ(HandledTotal(s, "Watch"), calls);
  EXPECT_EQ(s[Series("grpc_server_handled_total", "Watch", "etcdserverpb.Watch",
                     "bidi_stream", "Canceled")],
            kThreads * ((kCallsPerThread + 1) / 2));  // even i cancel
  EXPECT_EQ(s[Series("grpc_server_msg_received_total", "Watch",
                     "etcdserverpb.Watch", "bidi_stream")],
            calls);
}

TEST(InitializeGrpcServiceMetricsTest, CreatesEveryMethodsSeriesAtZero) {
  metrics::Registry registry;
  InitializeGrpcServiceMetrics(&registry, "etcdserverpb.KV");
  InitializeGrpcServiceMetrics(&registry, "grpc.health.v1.Health");
  const std::string text = registry.Render();
  for (const char* expected : {
           "grpc_server_started_total{grpc_method=\"Compact\",grpc_service="
           "\"etcdserverpb.KV\",grpc_type=\"unary\"} 0\n",
           "grpc_server_handled_total{grpc_code=\"DataLoss\",grpc_method="
           "\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0\n",
           "grpc_server_msg_sent_total{grpc_method=\"Watch\",grpc_service="
           "\"grpc.health.v1.Health\",grpc_type=\"server_stream\"} 0\n",
       }) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected;
  }
  int handled = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "grpc_server_handled_total{")) ++handled;
  }
  // KV's 5 methods and Health's 2, 17 codes each.
  EXPECT_EQ(handled, (5 + 2) * 17);
  EXPECT_EQ(text.find("etcd_server_client_requests_total"), std::string::npos);
}

TEST(InitializeGrpcServiceMetricsDeathTest, UnknownServiceAborts) {
  metrics::Registry registry;
  EXPECT_DEATH(InitializeGrpcServiceMetrics(&registry, "etcdserverpb.Nope"),
               "unknown service etcdserverpb.Nope");
}

}  // namespace
}  // namespace lockd
