// Runs every workload briefly against a real single-member etcd (Debian's
// /usr/bin/etcd) on free loopback ports, and checks only that each run
// completes without errors and prints a well-formed report. Speed is never
// asserted.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/loadgen/loadgen.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "lockd/util/json.h"

namespace lockd_bench {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";

bool PortFree(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok =
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// Below 32768, so never in the kernel's ephemeral range.
int PickPort(std::mt19937* rng) {
  for (;;) {
    const int port = 20000 + static_cast<int>((*rng)() % 12000);
    if (PortFree(port)) return port;
  }
}

// True when the StatusRequest is answered and the member leads itself.
bool Ready(const std::string& endpoint) {
  auto stub = etcdserverpb::Maintenance::NewStub(
      grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(500));
  etcdserverpb::StatusRequest req;
  etcdserverpb::StatusResponse resp;
  return stub->Status(&ctx, req, &resp).ok() && resp.leader() != 0;
}

class EtcdSmokeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // As Main() does, before any gRPC call: Debian's abseil keeps deadlock
    // detection on, whose bookkeeping (uninstrumented) TSAN reports as racy.
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    if (access(kEtcd, X_OK) != 0) return;
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string dir = absl::StrCat(tmp ? tmp : "/tmp", "/etcd-smoke");
    std::mt19937 rng(
        static_cast<uint32_t>(getpid() ^ absl::ToUnixNanos(absl::Now())));
    for (int attempt = 0; attempt < 3 && pid_ <= 0; ++attempt) {
      const int client_port = PickPort(&rng), peer_port = PickPort(&rng);
      endpoint_ = absl::StrCat("127.0.0.1:", client_port);
      const std::string client_url = "http://" + endpoint_;
      const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port);
      std::vector<std::string> args = {
          kEtcd,
          "--name=smoke",
          "--data-dir=" + dir + std::to_string(attempt),
          "--listen-client-urls=" + client_url,
          "--advertise-client-urls=" + client_url,
          "--listen-peer-urls=" + peer_url,
          "--initial-advertise-peer-urls=" + peer_url,
          "--initial-cluster=smoke=" + peer_url,
          "--log-outputs=stderr",
          "--logger=zap",
          "--log-level=error",
      };
      // Built before fork: the child of a multithreaded process must not
      // allocate before exec.
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      const pid_t pid = fork();
      if (pid == 0) {
        execv(kEtcd, argv.data());
        _exit(127);
      }
      pid_ = pid;
      const absl::Time deadline = absl::Now() + absl::Seconds(20);
      bool ready = false;
      while (absl::Now() < deadline) {
        if (waitpid(pid_, nullptr, WNOHANG) == pid_) break;  // exited
        if (Ready(endpoint_)) {
          ready = true;
          break;
        }
        absl::SleepFor(absl::Milliseconds(50));
      }
      if (!ready) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
      }
    }
  }

  static void TearDownTestSuite() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  void SetUp() override {
    if (access(kEtcd, X_OK) != 0) GTEST_SKIP() << kEtcd << " not installed";
    ASSERT_GT(pid_, 0) << "etcd did not start";
  }

  // Runs lockd-bench with `args` (after the workload) in JSON mode and checks
  // the report. Returns the JSON line.
  std::string RunJson(const std::string& workload,
                      std::vector<std::string> args) {
    std::vector<std::string> argv = {
        "lockd-bench", workload, "--endpoints=" + endpoint_, "--format=json"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<const char*> cargv;
    for (auto& a : argv) cargv.push_back(a.c_str());
    std::ostringstream out, err;
    const int rc = Main(static_cast<int>(cargv.size()), cargv.data(), out, err);
    EXPECT_EQ(rc, 0) << "stderr: " << err.str() << "\nstdout: " << out.str();
    const std::string json = out.str();
    EXPECT_TRUE(WellFormedObject(json)) << json;
    EXPECT_NE(json.find("\"workload\":\"" + workload + "\""), std::string::npos)
        << json;
    EXPECT_NE(json.find("\"errors_total\":0,"), std::string::npos) << json;
    return json;
  }

  // One JSON object on one line.
  static bool WellFormedObject(const std::string& s) {
    std::vector<absl::string_view> objects;
    return absl::EndsWith(s, "}\n") && s.find('\n') == s.size() - 1 &&
           lockd::SplitJsonObjects(s, &objects) && objects.size() == 1;
  }

  // Value of a numeric field "name":<number> in the report.
  static double Field(const std::string& json, const std::string& name) {
    const std::string needle = "\"" + name + "\":";
    const size_t at = json.find(needle);
    if (at == std::string::npos) return -1;
    return std::strtod(json.c_str() + at + needle.size(), nullptr);
  }

  static pid_t pid_;
  static std::string endpoint_;
};

pid_t EtcdSmokeTest::pid_ = -1;
std::string EtcdSmokeTest::endpoint_;

TEST_F(EtcdSmokeTest, Put) {
  const std::string json = RunJson(
      "put",
      {"--total=200", "--clients=10", "--conns=2", "--key-space-size=100"});
  EXPECT_EQ(Field(json, "ops"), 200);
}

TEST_F(EtcdSmokeTest, Put_TextFormatAndTargetLeader) {
  std::vector<std::string> argv = {
      "lockd-bench",     "put",        "--endpoints=" + endpoint_, "--total=20",
      "--target-leader", "--rate=1000"};
  std::vector<const char*> cargv;
  for (auto& a : argv) cargv.push_back(a.c_str());
  std::ostringstream out, err;
  EXPECT_EQ(Main(static_cast<int>(cargv.size()), cargv.data(), out, err), 0)
      << err.str();
  EXPECT_NE(out.str().find("ops/s"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("errors     none"), std::string::npos) << out.str();
}

TEST_F(EtcdSmokeTest, Put_ServerCpuFromPids) {
  const std::string json =
      RunJson("put", {"--total=50", "--pids=" + std::to_string(pid_)});
  EXPECT_GE(Field(json, "server_cpu_us_per_op"), 0);
}

TEST_F(EtcdSmokeTest, RangeLinearizable) {
  const std::string json =
      RunJson("range", {"--total=200", "--clients=10", "--consistency=l"});
  EXPECT_EQ(Field(json, "ops"), 200);
}

TEST_F(EtcdSmokeTest, RangeSerializable) {
  const std::string json =
      RunJson("range", {"--total=200", "--clients=10", "--consistency=s"});
  EXPECT_EQ(Field(json, "ops"), 200);
}

TEST_F(EtcdSmokeTest, TxnPut) {
  const std::string json = RunJson("txn-put", {"--total=200", "--clients=10"});
  EXPECT_EQ(Field(json, "ops"), 200);
}

TEST_F(EtcdSmokeTest, LeaseKeepAlive) {
  const std::string json =
      RunJson("lease-keepalive", {"--total=200", "--clients=10", "--conns=2"});
  EXPECT_EQ(Field(json, "ops"), 200);
}

TEST_F(EtcdSmokeTest, Watch_DeliversEveryEventToEveryWatcher) {
  const std::string json =
      RunJson("watch", {"--total=100", "--clients=5", "--watchers=20",
                        "--watch-streams=4", "--key-space-size=50"});
  EXPECT_EQ(Field(json, "events_received"), 100 * 20);
}

TEST_F(EtcdSmokeTest, WatchLatency) {
  const std::string json = RunJson(
      "watch-latency",
      {"--total=50", "--rate=500", "--watchers=10", "--watch-streams=2"});
  EXPECT_EQ(Field(json, "events_received"), 50 * 10);
  EXPECT_EQ(Field(json, "events_unmatched"), 0);
}

// etcd's Lock RPC blocks until this lease's key has the lowest create
// revision under the name, so with one name every Lock hands over from the
// previous holder's Unlock: all acquisitions succeed, none time out.
TEST_F(EtcdSmokeTest, Lock_ContendedOneName) {
  const std::string json = RunJson("lock", {"--total=40", "--clients=5"});
  EXPECT_EQ(Field(json, "ops"), 40);
}

TEST_F(EtcdSmokeTest, Lock_UncontendedManyNames) {
  const std::string json =
      RunJson("lock", {"--total=40", "--clients=5", "--lock-names=5"});
  EXPECT_EQ(Field(json, "ops"), 40);
}

TEST_F(EtcdSmokeTest, Mixed) {
  const std::string json = RunJson(
      "mixed",
      {"--total=200", "--clients=10", "--watchers=10", "--key-space-size=100"});
  EXPECT_EQ(Field(json, "ops"), 200);
}

TEST_F(EtcdSmokeTest, Datascale) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string json =
      RunJson("datascale",
              {"--total=200", "--clients=10", "--pids=" + std::to_string(pid_),
               "--data-dirs=" + std::string(tmp ? tmp : "/tmp")});
  EXPECT_EQ(Field(json, "keys_loaded"), 200);
  EXPECT_GT(Field(json, "rss_bytes_total"), 0);
  EXPECT_GT(Field(json, "data_dir_bytes_total"), 0);
}

TEST_F(EtcdSmokeTest, UnknownWorkload_IsAUsageError) {
  std::vector<const char*> argv = {"lockd-bench", "nope"};
  std::ostringstream out, err;
  EXPECT_EQ(Main(2, argv.data(), out, err), 2);
}

}  // namespace
}  // namespace lockd_bench
