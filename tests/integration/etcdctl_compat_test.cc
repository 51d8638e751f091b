// Wire compatibility with a client nobody here wrote: Debian's etcdctl 3.4
// against real lockd processes. Also lockd's flag validation and exit codes,
// and the standard gRPC health service.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "etcdserverpb/rpc.pb.h"
#include "health/health.grpc.pb.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// etcdctl's JSON output is Go's rendering of the etcd messages; the field
// names are the proto field names, so protobuf's JSON parser reads them.
template <typename Message>
Message ParseJson(const std::string& json) {
  Message m;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  auto status = google::protobuf::util::JsonStringToMessage(json, &m, opts);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return m;
}

// `endpoint status -w json` prints [{"Endpoint":..,"Status":{..}}, ...].
std::vector<etcdserverpb::StatusResponse> ParseStatusList(
    const std::string& json) {
  std::vector<etcdserverpb::StatusResponse> out;
  size_t pos = 0;
  const std::string key = "\"Status\":";
  while ((pos = json.find(key, pos)) != std::string::npos) {
    size_t start = pos + key.size();
    int depth = 0;
    size_t end = start;
    for (; end < json.size(); ++end) {
      if (json[end] == '{') ++depth;
      if (json[end] == '}' && --depth == 0) break;
    }
    out.push_back(ParseJson<etcdserverpb::StatusResponse>(
        json.substr(start, end - start + 1)));
    pos = end;
  }
  return out;
}

std::string Hex(uint64_t id) { return absl::StrFormat("%x", id); }

TEST(EtcdctlCompatTest, SingleMember_EndpointStatusAndMemberList) {
  LocalCluster cluster(1, "single");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  // A started member serves at once; its client URLs reach the member list
  // once the leader has replicated them.
  ASSERT_TRUE(cluster.WaitForPublished(absl::Seconds(30)));
  // As etcd, the member says it is ready once it has published itself.
  ASSERT_TRUE(cluster.process(0).WaitForOutput("ready to serve client requests",
                                               absl::Seconds(10)));
  {
    const std::string log = cluster.process(0).output();
    EXPECT_LT(log.find("published name m1 and client URLs"),
              log.find("ready to serve client requests"))
        << log;
  }
  const MemberSpec& m = cluster.member(0);

  CommandResult status =
      Etcdctl(m.endpoint(), {"endpoint", "status", "-w", "json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  std::vector<etcdserverpb::StatusResponse> statuses =
      ParseStatusList(status.out);
  ASSERT_EQ(statuses.size(), 1u) << status.out;
  const etcdserverpb::StatusResponse& s = statuses[0];
  EXPECT_NE(s.header().member_id(), 0u);
  EXPECT_NE(s.header().cluster_id(), 0u);
  EXPECT_EQ(s.version(), "3.5.0");
  // A one-member cluster leads itself.
  EXPECT_EQ(s.leader(), s.header().member_id());

  CommandResult list = Etcdctl(m.endpoint(), {"member", "list", "-w", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto members = ParseJson<etcdserverpb::MemberListResponse>(list.out);
  ASSERT_EQ(members.members_size(), 1);
  EXPECT_EQ(members.members(0).id(), s.header().member_id());
  EXPECT_EQ(members.members(0).name(), "m1");
  ASSERT_EQ(members.members(0).peerurls_size(), 1);
  EXPECT_EQ(members.members(0).peerurls(0), m.peer_url());
  ASSERT_EQ(members.members(0).clienturls_size(), 1);
  EXPECT_EQ(members.members(0).clienturls(0), m.client_url());
  EXPECT_EQ(members.header().cluster_id(), s.header().cluster_id());

  // The simple format, as operators read it.
  CommandResult simple = Etcdctl(m.endpoint(), {"member", "list"});
  ASSERT_EQ(simple.exit_code, 0) << simple.err;
  EXPECT_EQ(simple.out,
            absl::StrCat(Hex(s.header().member_id()), ", started, m1, ",
                         m.peer_url(), ", ", m.client_url(), ", false\n"));

  // A clean stop on SIGTERM.
  EXPECT_EQ(cluster.StopMember(0), 0);
}

TEST(EtcdctlCompatTest, ThreeMembers_AgreeOnClusterAndMembers) {
  LocalCluster cluster(3, "three");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_TRUE(cluster.WaitForPublished(absl::Seconds(30)));

  CommandResult status =
      Etcdctl(cluster.endpoints(), {"endpoint", "status", "-w", "json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  std::vector<etcdserverpb::StatusResponse> statuses =
      ParseStatusList(status.out);
  ASSERT_EQ(statuses.size(), 3u) << status.out;
  std::set<uint64_t> member_ids;
  for (const auto& s : statuses) {
    EXPECT_EQ(s.header().cluster_id(), statuses[0].header().cluster_id());
    member_ids.insert(s.header().member_id());
  }
  EXPECT_EQ(member_ids.size(), 3u);

  // Every member lists the same three members.
  for (int i = 0; i < 3; ++i) {
    CommandResult list =
        Etcdctl(cluster.member(i).endpoint(), {"member", "list", "-w", "json"});
    ASSERT_EQ(list.exit_code, 0) << list.err;
    auto members = ParseJson<etcdserverpb::MemberListResponse>(list.out);
    ASSERT_EQ(members.members_size(), 3);
    std::set<uint64_t> listed;
    std::set<std::string> names;
    for (const auto& mem : members.members()) {
      listed.insert(mem.id());
      names.insert(mem.name());
    }
    EXPECT_EQ(listed, member_ids);
    EXPECT_EQ(names, (std::set<std::string>{"m1", "m2", "m3"}));
  }
}

TEST(EtcdctlCompatTest, HealthService_ServesOnClientAndPeerPorts) {
  LocalCluster cluster(1, "health");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  for (int port :
       {cluster.member(0).client_port, cluster.member(0).peer_port}) {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                       grpc::InsecureChannelCredentials());
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = stub->Check(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
}

struct BadFlagCase {
  std::vector<std::string> flags;
  std::string message;
};

TEST(LockdFlagsTest, BadFlags_ClearMessageAndExitCode1) {
  std::string dir = TempDir("badflags");
  std::string file = dir + "/not-a-dir";
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  int client = PickFreePort();
  int peer = PickFreePort();
  std::string client_url = absl::StrCat("http://127.0.0.1:", client);
  std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
  std::vector<std::string> good = {"--listen-client-urls=" + client_url,
                                   "--advertise-client-urls=" + client_url,
                                   "--listen-peer-urls=" + peer_url,
                                   "--initial-advertise-peer-urls=" + peer_url,
                                   "--data-dir=" + dir + "/data"};

  std::vector<BadFlagCase> cases = {
      {{"--name=x", "--initial-cluster=y=" + peer_url},
       "couldn't find local name \"x\" in the initial cluster configuration"},
      {{"--listen-client-urls=http://127.0.0.1"}, "missing port"},
      {{"--advertise-client-urls=127.0.0.1:2379"},
       "expected scheme://host:port"},
      {{"--listen-peer-urls=http://lockd.example:2380"},
       "expected IP in URL for binding (http://lockd.example:2380)"},
      {{"--initial-cluster-state=sideways"},
       "valid values are \"new\" and \"existing\""},
      {{"--data-dir=" + file}, "cannot access data directory"},
      {{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
  };
  for (const BadFlagCase& c : cases) {
    std::vector<std::string> argv = {Runfile("lockd/lockd")};
    argv.insert(argv.end(), good.begin(), good.end());
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(30));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->exit_code, 0) << c.flags[0];
    EXPECT_NE(r->err.find(c.message), std::string::npos)
        << "flags: " << c.flags[0] << "\nstderr: " << r->err;
  }
}

TEST(LockdFlagsTest, DataDirInUse_SecondProcessRefused) {
  LocalCluster cluster(1, "inuse");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  // Same data directory, different ports.
  int client = PickFreePort();
  int peer = PickFreePort();
  std::string client_url = absl::StrCat("http://127.0.0.1:", client);
  std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
  absl::StatusOr<CommandResult> r = RunCommand(
      {Runfile("lockd/lockd"), "--data-dir=" + cluster.member(0).data_dir,
       "--listen-client-urls=" + client_url,
       "--advertise-client-urls=" + client_url,
       "--listen-peer-urls=" + peer_url,
       "--initial-advertise-peer-urls=" + peer_url},
      absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_NE(r->err.find("is in use by another lockd process"),
            std::string::npos)
      << r->err;
}

TEST(LockdFlagsTest, PortInUse_NamesTheAddress) {
  LocalCluster cluster(1, "portuse");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  const MemberSpec& m = cluster.member(0);
  int peer = PickFreePort();
  std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
  absl::StatusOr<CommandResult> r =
      RunCommand({Runfile("lockd/lockd"), "--data-dir=" + TempDir("portuse-2"),
                  "--listen-client-urls=" + m.client_url(),
                  "--advertise-client-urls=" + m.client_url(),
                  "--listen-peer-urls=" + peer_url,
                  "--initial-advertise-peer-urls=" + peer_url},
                 absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_NE(r->err.find(absl::StrCat("listen tcp ", m.endpoint(),
                                     ": bind: Address already in use")),
            std::string::npos)
      << r->err;
}

TEST(LockctlTest, Version) {
  absl::StatusOr<CommandResult> r =
      RunCommand({Runfile("lockd/lockctl"), "version"}, absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out, "lockctl version: 0.1.0\nAPI version: 3.5\n");

  r = RunCommand({Runfile("lockd/lockctl"), "frobnicate"}, absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_NE(r->err.find("unknown command \"frobnicate\""), std::string::npos);
}

}  // namespace
}  // namespace lockd::testing
