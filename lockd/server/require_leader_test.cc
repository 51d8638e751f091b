// RequireLeaderStreams on a real in-process gRPC server: EndAll ends a
// server-streaming handler that polls for cancellation and a bidi handler
// blocked in Read, the client sees the status given (not a bare
// CANCELLED), and both handlers return.
#include "lockd/server/require_leader.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>

#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "v3electionpb/v3election.grpc.pb.h"

namespace lockd {
namespace {

// Polls `cond` until true or `timeout`.
template <typename Cond>
bool Eventually(Cond cond, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (absl::Now() < until) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return cond();
}

// Observe: writes one answer, then waits for cancellation as the real
// Observe does (polling), as long as the test allows.
class ObserveOnly final : public v3electionpb::Election::Service {
 public:
  explicit ObserveOnly(RequireLeaderStreams* streams) : streams_(streams) {}
  grpc::Status Observe(
      grpc::ServerContext* ctx, const v3electionpb::LeaderRequest*,
      grpc::ServerWriter<v3electionpb::LeaderResponse>* writer) override {
    RequireLeaderStreams::Registration registration(streams_, ctx);
    writer->Write(v3electionpb::LeaderResponse());
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (!ctx->IsCancelled() && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    returned = true;
    return grpc::Status(grpc::StatusCode::CANCELLED, "handler saw the cancel");
  }
  std::atomic<bool> returned{false};

 private:
  RequireLeaderStreams* streams_;
};

// LeaseKeepAlive: answers each request; blocks in Read in between.
class KeepAliveOnly final : public etcdserverpb::Lease::Service {
 public:
  explicit KeepAliveOnly(RequireLeaderStreams* streams) : streams_(streams) {}
  grpc::Status LeaseKeepAlive(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<etcdserverpb::LeaseKeepAliveResponse,
                               etcdserverpb::LeaseKeepAliveRequest>* stream)
      override {
    RequireLeaderStreams::Registration registration(streams_, ctx);
    etcdserverpb::LeaseKeepAliveRequest req;
    while (stream->Read(&req)) {
      etcdserverpb::LeaseKeepAliveResponse resp;
      resp.set_id(req.id());
      resp.set_ttl(10);
      if (!stream->Write(resp)) break;
    }
    returned = true;
    return grpc::Status::OK;
  }
  std::atomic<bool> returned{false};

 private:
  RequireLeaderStreams* streams_;
};

TEST(RequireLeaderStreamsTest, EndAllEndsBlockedStreamsWithTheStatus) {
  RequireLeaderStreams streams;
  ObserveOnly observe(&streams);
  KeepAliveOnly keep_alive(&streams);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&observe);
  builder.RegisterService(&keep_alive);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  auto deadline = absl::ToChronoTime(absl::Now() + absl::Seconds(20));

  grpc::ClientContext ob_ctx;
  ob_ctx.set_deadline(deadline);
  auto election = v3electionpb::Election::NewStub(channel);
  auto reader = election->Observe(&ob_ctx, v3electionpb::LeaderRequest());
  v3electionpb::LeaderResponse seen;
  ASSERT_TRUE(reader->Read(&seen));

  grpc::ClientContext ka_ctx;
  ka_ctx.set_deadline(deadline);
  auto lease = etcdserverpb::Lease::NewStub(channel);
  auto ka = lease->LeaseKeepAlive(&ka_ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  req.set_id(7);
  etcdserverpb::LeaseKeepAliveResponse resp;
  ASSERT_TRUE(ka->Write(req));
  ASSERT_TRUE(ka->Read(&resp));
  EXPECT_EQ(resp.id(), 7);
  ASSERT_EQ(streams.open_streams(), 2);

  EXPECT_EQ(
      streams.EndAll(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader"),
      2);
  EXPECT_EQ(streams.open_streams(), 0);
  while (reader->Read(&seen)) {
  }
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: no leader");
  while (ka->Read(&resp)) {
  }
  st = ka->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "etcdserver: no leader");
  // Both handlers woke up and returned (the Observe one well before its
  // own 30 s limit, which the deadline of this wait is below).
  EXPECT_TRUE(
      Eventually([&] { return observe.returned.load(); }, absl::Seconds(10)));
  EXPECT_TRUE(Eventually([&] { return keep_alive.returned.load(); },
                         absl::Seconds(10)));
  // Nothing is left to end.
  EXPECT_EQ(streams.EndAll(grpc::StatusCode::UNAVAILABLE, "again"), 0);
  server->Shutdown();
}

}  // namespace
}  // namespace lockd
