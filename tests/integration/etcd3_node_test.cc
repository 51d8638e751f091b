// A 3-member lockd cluster driven by the npm etcd3 client (run with
// Node.js): KV, transactions, leases with keep-alive, expiry and revoke,
// watches, and etcd3's client-side locks and elections.
// tests/node/etcd3_check.js does the checking; this test starts the cluster and
// runs it.
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// The driver script in the source tree (its node_modules/ sits beside it).
std::string ScriptPath() {
  std::string link = Runfile("tests/node/etcd3_check.js");
  char real[PATH_MAX];
  if (realpath(link.c_str(), real) == nullptr) return link;
  return real;
}

void RunSuites(const std::string& suites) {
  const std::string script = ScriptPath();
  const std::string dir = script.substr(0, script.rfind('/'));
  ASSERT_EQ(access((dir + "/node_modules/etcd3/package.json").c_str(), R_OK), 0)
      << "the npm etcd3 client is not installed in " << dir
      << "/node_modules: run scripts/setup.sh (it runs npm ci there)";
  LocalCluster cluster(3, "etcd3-" + suites);
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  absl::StatusOr<CommandResult> r = RunCommand(
      {"node", script, cluster.endpoints(), suites}, absl::Seconds(120));
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("%s", r->out.c_str());
  EXPECT_EQ(r->exit_code, 0) << r->out << r->err;
  EXPECT_EQ(r->out.find("FAIL"), std::string::npos) << r->out;
}

TEST(Etcd3NodeTest, KvTxnLeasesAndClientLocks) { RunSuites("kv,lease,lock"); }

TEST(Etcd3NodeTest, WatchesAndClientElections) { RunSuites("watch,election"); }

}  // namespace
}  // namespace lockd::testing
