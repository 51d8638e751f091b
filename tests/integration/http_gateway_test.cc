// HTTP/1.x on the client port of a 3-member cluster, beside gRPC: /health,
// /version and the JSON gateway, driven by curl, by raw sockets for the
// HTTP corner cases, and by Patroni's own etcd v3 client
// (tests/patroni/patroni_check.py, with Debian's python3 and `patroni`).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

struct Http {
  int code = 0;
  std::string body;
};

// One curl request; `data` (when not empty) is POSTed.
Http Curl(const std::string& endpoint, const std::string& path,
          const std::string& data = "", const std::string& method = "") {
  std::vector<std::string> argv = {"curl", "-sS", "-m",
                                   "20",   "-w",  "\n%{http_code}"};
  if (!method.empty()) argv.insert(argv.end(), {"-X", method});
  if (!data.empty()) argv.insert(argv.end(), {"--data-binary", data});
  argv.push_back(absl::StrCat("http://", endpoint, path));
  absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(30));
  Http h;
  if (!r.ok()) {
    ADD_FAILURE() << r.status();
    return h;
  }
  const size_t nl = r->out.rfind('\n');
  if (nl == std::string::npos ||
      !absl::SimpleAtoi(r->out.substr(nl + 1), &h.code)) {
    ADD_FAILURE() << "curl: " << r->out << r->err;
    return h;
  }
  h.body = r->out.substr(0, nl);
  return h;
}

std::string B64(const std::string& s) { return absl::Base64Escape(s); }

// Sends `request` on a fresh connection to 127.0.0.1:port and reads until the
// server closes it (at most `wait`).
std::string RawExchange(int port, const std::string& request,
                        absl::Duration wait = absl::Seconds(10)) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  // (Not half-closed after it: as etcd's Go server, lockd takes a client
  // that closes its side for gone, and cancels its call.)
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  const absl::Time until = absl::Now() + wait;
  while (absl::Now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

int Port(const std::string& endpoint) {
  int port = 0;
  EXPECT_TRUE(
      absl::SimpleAtoi(endpoint.substr(endpoint.rfind(':') + 1), &port));
  return port;
}

class HttpGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<LocalCluster>(3, "http-gateway");
    absl::Status started = cluster_->StartAll();
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_NE(cluster_->WaitForLeader(absl::Seconds(30)), 0u);
    ASSERT_TRUE(cluster_->WaitForPublished(absl::Seconds(30)));
  }
  std::unique_ptr<LocalCluster> cluster_;
};

TEST_F(HttpGatewayTest, HealthVersionAndKvThroughAnyMember) {
  for (int i = 0; i < 3; ++i) {
    Http h = Curl(cluster_->member(i).endpoint(), "/health");
    EXPECT_EQ(h.code, 200) << "member " << i;
    EXPECT_EQ(h.body, R"({"health":"true"})") << "member " << i;
  }
  // Prometheus metrics under etcd's names: every member has a leader, one
  // is it, and each counted the health check above.
  int leaders = 0;
  std::string follower;  // a member that is not the leader
  for (int i = 0; i < 3; ++i) {
    Http m = Curl(cluster_->member(i).endpoint(), "/metrics");
    EXPECT_EQ(m.code, 200) << "member " << i;
    EXPECT_TRUE(absl::StrContains(m.body, "\netcd_server_has_leader 1\n"))
        << m.body;
    EXPECT_TRUE(absl::StrContains(m.body, "\netcd_server_health_success 1\n"))
        << m.body;
    EXPECT_TRUE(absl::StrContains(m.body, "\netcd_server_is_learner 0\n"))
        << m.body;
    EXPECT_TRUE(absl::StrContains(m.body, "\nprocess_resident_memory_bytes "))
        << m.body;
    if (absl::StrContains(m.body, "\netcd_server_is_leader 1\n")) {
      ++leaders;
    } else {
      follower = cluster_->member(i).endpoint();
    }
  }
  EXPECT_EQ(leaders, 1);

  Http v = Curl(cluster_->member(0).endpoint(), "/version");
  EXPECT_EQ(v.code, 200);
  EXPECT_EQ(v.body, R"({"etcdserver":"3.5.0","etcdcluster":"3.5.0"})");

  // A put through one member, read through another (the old /v3beta/ path
  // too), and over gRPC on the same port.
  const std::string e0 = cluster_->member(0).endpoint();
  const std::string e2 = cluster_->member(2).endpoint();
  Http put = Curl(e0, "/v3/kv/put",
                  absl::StrCat(R"({"key":")", B64("gw/a"), R"(","value":")",
                               B64("hello"), R"("})"));
  ASSERT_EQ(put.code, 200) << put.body;
  EXPECT_TRUE(absl::StrContains(put.body, R"("revision":")")) << put.body;
  Http get = Curl(e2, "/v3beta/kv/range",
                  absl::StrCat(R"({"key":")", B64("gw/a"), R"("})"));
  ASSERT_EQ(get.code, 200) << get.body;
  EXPECT_TRUE(absl::StrContains(
      get.body, absl::StrCat(R"("value":")", B64("hello"), "\"")))
      << get.body;
  EXPECT_TRUE(absl::StrContains(get.body, R"("count":"1")")) << get.body;
  absl::StatusOr<CommandResult> ctl = RunCommand(
      {"etcdctl", "--endpoints=" + e2, "get", "gw/a", "--print-value-only"},
      absl::Seconds(20), {"ETCDCTL_API=3"});
  ASSERT_TRUE(ctl.ok()) << ctl.status();
  EXPECT_EQ(ctl->out, "hello\n") << ctl->err;

  // A transaction that only succeeds while the key is unchanged.
  Http txn = Curl(
      e2, "/v3/kv/txn",
      absl::StrCat(R"({"compare":[{"key":")", B64("gw/a"),
                   R"(","target":"VALUE","result":"EQUAL","value":")",
                   B64("hello"), R"("}],"success":[{"request_put":{"key":")",
                   B64("gw/a"), R"(","value":")", B64("world"), R"("}}]})"));
  ASSERT_EQ(txn.code, 200) << txn.body;
  EXPECT_TRUE(absl::StrContains(txn.body, R"("succeeded":true)")) << txn.body;

  // A lease, a key on it, its time to live with keys, its revoke.
  Http grant = Curl(e0, "/v3/lease/grant", R"({"TTL":60})");
  ASSERT_EQ(grant.code, 200) << grant.body;
  const size_t at = grant.body.find(R"("ID":")");
  ASSERT_NE(at, std::string::npos) << grant.body;
  const std::string id =
      grant.body.substr(at + 6, grant.body.find('"', at + 6) - (at + 6));
  ASSERT_EQ(Curl(e2, "/v3/kv/put",
                 absl::StrCat(R"({"key":")", B64("gw/leased"), R"(","lease":")",
                              id, R"("})"))
                .code,
            200);
  Http ttl = Curl(e2, "/v3/kv/lease/timetolive",
                  absl::StrCat(R"({"ID":")", id, R"(","keys":true})"));
  EXPECT_EQ(ttl.code, 200);
  EXPECT_TRUE(absl::StrContains(ttl.body, B64("gw/leased"))) << ttl.body;
  // A keep-alive answers once and ends, as etcd's gateway does; on a
  // follower, which relays it to the leader, too.
  ASSERT_FALSE(follower.empty());
  Http ka = Curl(follower, "/v3/lease/keepalive",
                 absl::StrCat(R"({"ID":")", id, R"("})"));
  EXPECT_EQ(ka.code, 200);
  EXPECT_TRUE(absl::StartsWith(ka.body, R"({"result":{"header":)")) << ka.body;
  EXPECT_TRUE(absl::StrContains(ka.body, R"("TTL":"60")")) << ka.body;
  EXPECT_EQ(
      Curl(e0, "/v3/lease/revoke", absl::StrCat(R"({"ID":")", id, R"("})"))
          .code,
      200);
  Http gone = Curl(e0, "/v3/kv/range",
                   absl::StrCat(R"({"key":")", B64("gw/leased"), R"("})"));
  EXPECT_FALSE(absl::StrContains(gone.body, "kvs")) << gone.body;

  // The member list, with etcd's field names.
  Http members = Curl(e2, "/v3/cluster/member/list", "{}");
  EXPECT_EQ(members.code, 200);
  EXPECT_TRUE(absl::StrContains(members.body, R"("clientURLs":[")"))
      << members.body;
}

TEST_F(HttpGatewayTest, BadRequestsGetEtcdsErrorsAndChangeNothing) {
  const std::string e = cluster_->member(1).endpoint();
  Http bad = Curl(e, "/v3/kv/put", "{not json");
  EXPECT_EQ(bad.code, 400);
  EXPECT_TRUE(absl::StrContains(bad.body, R"("code":3)")) << bad.body;

  Http no_key =
      Curl(e, "/v3/kv/put", absl::StrCat(R"({"value":")", B64("v"), R"("})"));
  EXPECT_EQ(no_key.code, 400);
  EXPECT_EQ(
      no_key.body,
      R"({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})");

  Http lease = Curl(e, "/v3/lease/revoke", R"({"ID":"12345"})");
  EXPECT_EQ(lease.code, 404);
  EXPECT_TRUE(
      absl::StrContains(lease.body, "etcdserver: requested lease not found"))
      << lease.body;

  EXPECT_EQ(Curl(e, "/v3/kv/range", "", "GET").code, 405);
  EXPECT_EQ(Curl(e, "/v3/no/such/thing", "{}").code, 404);
  EXPECT_EQ(Curl(e, "/health", "{}").code, 405);

  // A body over twice --max-request-bytes (+64 KiB) is refused unread (curl
  // waits for "100 Continue" first: 413); one under it whose request is over
  // the gRPC limit once decoded gets what etcd's gateway answers then
  // (RESOURCE_EXHAUSTED: 429).
  const std::string dir = TempDir("http-big");
  const std::string big = dir + "/big.json";
  {
    std::ofstream f(big);
    f << R"({"key":")" << B64("gw/big") << R"(","value":")"
      << std::string(4 * 1024 * 1024, 'A') << R"("})";
  }
  Http huge = Curl(e, "/v3/kv/put", "@" + big);
  EXPECT_EQ(huge.code, 413) << huge.body;
  const std::string mid = dir + "/mid.json";
  {
    std::ofstream f(mid);
    f << R"({"key":")" << B64("gw/big") << R"(","value":")"
      << B64(std::string(2 * 1024 * 1024, 'x')) << R"("})";
  }
  Http large = Curl(e, "/v3/kv/put", "@" + mid);
  EXPECT_EQ(large.code, 429) << large.body;
  EXPECT_TRUE(absl::StrContains(large.body, R"("code":8)")) << large.body;
  Http none = Curl(e, "/v3/kv/range",
                   absl::StrCat(R"({"key":")", B64("gw/big"), R"("})"));
  EXPECT_EQ(none.code, 200);
  EXPECT_FALSE(absl::StrContains(none.body, "kvs")) << none.body;
}

TEST_F(HttpGatewayTest, RawHttpCornerCases) {
  const int port = Port(cluster_->member(0).endpoint());
  // Two pipelined requests on one connection, the second with a chunked
  // body, then an HTTP/1.0 request: three answers, in order.
  const std::string put_body = absl::StrCat(
      R"({"key":")", B64("raw/k"), R"(","value":")", B64("v1"), R"("})");
  const std::string chunked = absl::StrCat(absl::Hex(put_body.size()), "\r\n",
                                           put_body, "\r\n0\r\n\r\n");
  std::string out = RawExchange(
      port,
      absl::StrCat("GET /version HTTP/1.1\r\nHost: x\r\n\r\n",
                   "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                   "chunked\r\n\r\n",
                   chunked, "POST /v3/kv/range HTTP/1.0\r\nContent-Length: ",
                   absl::StrCat(R"({"key":")", B64("raw/k"), R"("})").size(),
                   "\r\n\r\n", R"({"key":")", B64("raw/k"), R"("})"));
  size_t first = out.find("HTTP/1.1 200 OK");
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_NE(out.find(R"("etcdserver")"), std::string::npos) << out;
  size_t second = out.find("HTTP/1.1 200 OK", first + 1);
  ASSERT_NE(second, std::string::npos) << out;
  size_t third = out.find("HTTP/1.1 200 OK", second + 1);
  ASSERT_NE(third, std::string::npos) << out;
  EXPECT_NE(out.find(B64("v1"), third), std::string::npos) << out;
  EXPECT_NE(out.find("Connection: close", third), std::string::npos) << out;

  // Headers beyond 64 KiB: 431, and the connection is closed.
  out =
      RawExchange(port, absl::StrCat("GET /health HTTP/1.1\r\nX-Big: ",
                                     std::string(70 * 1024, 'x'), "\r\n\r\n"));
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 431")) << out.substr(0, 200);
  // Garbage: 400.
  out = RawExchange(port, "hello\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 400")) << out;
  // An unknown HTTP version: 505.
  out = RawExchange(port, "GET /health HTTP/3.0\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 505")) << out;
}

TEST_F(HttpGatewayTest, WatchStreamsEventsAndHealthFailsWithoutQuorum) {
  const std::string e0 = cluster_->member(0).endpoint();
  const std::string e1 = cluster_->member(1).endpoint();
  ASSERT_EQ(Curl(e0, "/v3/kv/put",
                 absl::StrCat(R"({"key":")", B64("w/1"), R"(","value":")",
                              B64("a"), R"("})"))
                .code,
            200);
  // A watch from revision 1 replays the put, then stays open until curl
  // gives up after 3 s (exit 28), as a watch over etcd's gateway does.
  absl::StatusOr<CommandResult> w =
      RunCommand({"curl", "-sS", "-N", "-m", "3", "--data-binary",
                  absl::StrCat(R"({"create_request":{"key":")", B64("w/"),
                               R"(","range_end":")", B64("w0"),
                               R"(","start_revision":"1"}})"),
                  absl::StrCat("http://", e1, "/v3/watch")},
                 absl::Seconds(20));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->exit_code, 28) << w->out << w->err;
  EXPECT_TRUE(absl::StartsWith(w->out, R"({"result":{"header":)")) << w->out;
  EXPECT_TRUE(absl::StrContains(w->out, R"("created":true)")) << w->out;
  EXPECT_TRUE(absl::StrContains(w->out, B64("w/1"))) << w->out;

  // Two members stop: the third has no quorum and says so.
  cluster_->StopMember(1);
  cluster_->StopMember(2);
  Http h;
  const absl::Time until = absl::Now() + absl::Seconds(20);
  do {
    h = Curl(e0, "/health");
  } while (h.code == 200 && absl::Now() < until);
  EXPECT_EQ(h.code, 503);
  EXPECT_EQ(h.body, "{\"health\":\"false\"}\n");
}

// Patroni's etcd v3 client (unchanged, from Debian's `patroni` package)
// runs two Patroni nodes' DCS calls against the cluster: see the script.
TEST_F(HttpGatewayTest, PatroniEtcd3Client) {
  ASSERT_EQ(access("/usr/lib/python3/dist-packages/patroni/dcs/etcd3.py", R_OK),
            0)
      << "Patroni is not installed: run scripts/setup.sh (it installs Debian's "
         "patroni package)";
  std::string link = Runfile("tests/patroni/patroni_check.py");
  absl::StatusOr<CommandResult> r = RunCommand(
      {"/usr/bin/python3", link, cluster_->endpoints()}, absl::Seconds(150));
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("%s", r->out.c_str());
  EXPECT_EQ(r->exit_code, 0) << r->out << r->err;
  EXPECT_TRUE(absl::StrContains(r->out, "all checks passed"))
      << r->out << r->err;
}

// --listen-metrics-urls: a second HTTP listener with /metrics and /health
// only, as etcd's (probes and scrapers use it, e.g. a kubelet's liveness
// probe); the client port keeps everything.
TEST(HttpMetricsListenerTest, MetricsAndHealthOnlyNoGrpc) {
  LocalCluster cluster(1, "metrics-listener");
  const int port = PickFreePort();
  const std::string metrics = absl::StrCat("127.0.0.1:", port);
  ASSERT_TRUE(cluster
                  .StartMember(0, {absl::StrCat("--listen-metrics-urls=http://",
                                                metrics)})
                  .ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  EXPECT_TRUE(cluster.process(0).WaitForOutput(
      absl::StrCat("listening for metrics on http://", metrics),
      absl::Seconds(10)));
  Http m = Curl(metrics, "/metrics");
  EXPECT_EQ(m.code, 200);
  EXPECT_NE(m.body.find("\netcd_server_has_leader 1\n"), std::string::npos)
      << m.body;
  Http h = Curl(metrics, "/health");
  EXPECT_EQ(h.code, 200);
  EXPECT_EQ(h.body, "{\"health\":\"true\"}");
  // Nothing else there.
  for (const char* path : {"/version", "/v3/kv/range", "/"}) {
    Http other =
        Curl(metrics, path,
             path[1] == 'v' && path[2] == '3' ? "{\"key\":\"YQ==\"}" : "");
    EXPECT_EQ(other.code, 404) << path;
    EXPECT_EQ(other.body, "404 page not found\n") << path;
  }
  CommandResult grpc_there = Etcdctl(
      metrics, {"get", "a", "--dial-timeout=2s", "--command-timeout=3s"});
  EXPECT_NE(grpc_there.exit_code, 0) << grpc_there.out;
  // The client port still serves gRPC and the gateway.
  const std::string client = cluster.member(0).endpoint();
  EXPECT_EQ(Etcdctl(client, {"put", "a", "1"}).out, "OK\n");
  EXPECT_EQ(Curl(client, "/version").code, 200);
}

}  // namespace
}  // namespace lockd::testing
