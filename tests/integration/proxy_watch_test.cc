// A watch relayed by a removed member's proxy ends, with the serving
// member's status, as soon as the member it is relayed to ends it, even
// though the watching client never writes again. (Before, the proxy kept the
// relayed call open until the client's next message, so a client watching
// through a removed member's endpoint went silent for good when the member
// serving its watch was removed in turn.)
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// Member id (hex, as etcdctl prints it) by name, once every member has
// published its client URLs (the proxy relays to those).
std::map<std::string, std::string> PublishedIds(const std::string& endpoint,
                                                size_t members) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    CommandResult r = Etcdctl(endpoint, {"member", "list"});
    std::map<std::string, std::string> ids;
    bool published = r.exit_code == 0;
    for (absl::string_view line : absl::StrSplit(r.out, '\n')) {
      if (line.empty()) continue;
      std::vector<std::string> f = absl::StrSplit(line, ", ");
      if (f.size() != 6 || f[4].empty()) {
        published = false;
        break;
      }
      ids[f[2]] = f[0];
    }
    if (published && ids.size() == members) return ids;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return {};
}

TEST(ProxyWatchTest, RelayedWatchEndsWhenItsMemberIsRemoved) {
  LocalCluster cluster(4, "proxywatch");
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(cluster.StartMember(i).ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  std::map<std::string, std::string> ids =
      PublishedIds(cluster.member(0).endpoint(), 4);
  ASSERT_EQ(ids.size(), 4u);

  // Member 0 is removed; its client port becomes a proxy.
  const std::string ep1 = cluster.member(1).endpoint();
  ASSERT_EQ(
      Etcdctl(ep1, {"member", "remove", ids[cluster.member(0).name]}).exit_code,
      0);
  const std::string proxy_ep = cluster.member(0).endpoint();
  const absl::Time ready_by = absl::Now() + absl::Seconds(20);
  while (Etcdctl(proxy_ep, {"endpoint", "status"}).out.find("was removed") ==
             std::string::npos &&
         absl::Now() < ready_by) {
    absl::SleepFor(absl::Milliseconds(100));
  }

  // A watch through the proxy; the created response names the member that
  // serves it.
  auto channel =
      grpc::CreateChannel(proxy_ep, grpc::InsecureChannelCredentials());
  auto stub = etcdserverpb::Watch::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = stub->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  req.mutable_create_request()->set_key("w/");
  req.mutable_create_request()->set_range_end("w0");
  ASSERT_TRUE(stream->Write(req));
  etcdserverpb::WatchResponse created;
  ASSERT_TRUE(stream->Read(&created));
  ASSERT_TRUE(created.created());
  const std::string server_hex =
      absl::StrCat(absl::Hex(created.header().member_id()));
  std::string server_name;
  for (const auto& [name, hex] : ids) {
    if (hex == server_hex) server_name = name;
  }
  ASSERT_FALSE(server_name.empty()) << server_hex;
  ASSERT_NE(server_name, cluster.member(0).name);

  // Events flow through the relay.
  ASSERT_EQ(Etcdctl(ep1, {"put", "w/1", "one"}).exit_code, 0);
  etcdserverpb::WatchResponse events;
  ASSERT_TRUE(stream->Read(&events));
  ASSERT_EQ(events.events_size(), 1);

  // Remove the serving member: it ends its watches with a retryable error,
  // which must reach this client through the proxy without it writing.
  std::string remaining_ep;
  for (int i = 1; i < 4; ++i) {
    if (cluster.member(i).name != server_name) {
      remaining_ep = cluster.member(i).endpoint();
    }
  }
  ASSERT_EQ(
      Etcdctl(remaining_ep, {"member", "remove", ids[server_name]}).exit_code,
      0);
  etcdserverpb::WatchResponse more;
  while (stream->Read(&more)) {
  }
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  EXPECT_NE(status.error_message().find("removed"), std::string::npos)
      << status.error_message();
}

}  // namespace
}  // namespace lockd::testing
