// The same etcdctl session against Debian's etcd 3.4 and against lockd, one
// member each, started fresh: every command's exit code, output and error
// must match once member/cluster IDs and raft terms are masked. Revisions
// are not masked: lockd numbers history exactly as etcd does.
#include <gtest/gtest.h>

#include <cstdlib>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

struct Step {
  Step(std::vector<std::string> a, std::string in = "")
      : args(std::move(a)), stdin_text(std::move(in)) {}
  std::vector<std::string> args;
  std::string stdin_text;
};

CommandResult RunStep(const std::string& endpoint, const Step& step) {
  std::vector<std::string> argv = {"etcdctl", "--endpoints=" + endpoint,
                                   "--dial-timeout=5s",
                                   "--command-timeout=10s"};
  argv.insert(argv.end(), step.args.begin(), step.args.end());
  absl::StatusOr<CommandResult> r =
      RunCommand(argv, absl::Seconds(30), {"ETCDCTL_API=3"}, step.stdin_text);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : CommandResult{};
}

// Masks what legitimately differs between two clusters.
std::string Normalize(std::string s) {
  static const std::regex kIds(
      R"re("(cluster_id|member_id|raft_term)":[0-9]+)re");
  s = std::regex_replace(s, kIds, "\"$1\":N");
  // etcdctl's client retry warnings carry timestamps and random ids.
  static const std::regex kWarn(R"re(\{"level":"warn".*\}\n?)re");
  s = std::regex_replace(s, kWarn, "");
  return s;
}

// Starts one etcd 3.4 member (Debian's) on free ports; `endpoint` gets its
// "127.0.0.1:port". Its log goes to the test's outputs as `tag`.log.
void StartEtcd(Subprocess* etcd, const std::string& tag,
               std::string* endpoint) {
  const int client = PickFreePort(), peer = PickFreePort();
  const std::string curl = absl::StrCat("http://127.0.0.1:", client);
  const std::string purl = absl::StrCat("http://127.0.0.1:", peer);
  const char* outputs = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  ASSERT_TRUE(
      etcd->Start(
              {"/usr/bin/etcd", "--name=e1", "--data-dir=" + TempDir(tag),
               "--listen-client-urls=" + curl,
               "--advertise-client-urls=" + curl, "--listen-peer-urls=" + purl,
               "--initial-advertise-peer-urls=" + purl,
               "--initial-cluster=e1=" + purl},
              {}, outputs ? absl::StrCat(outputs, "/", tag, ".log") : "")
          .ok());
  ASSERT_TRUE(
      etcd->WaitForOutput("ready to serve client requests", absl::Seconds(30)))
      << etcd->output();
  *endpoint = absl::StrCat("127.0.0.1:", client);
}

TEST(DifferentialTest, SameEtcdctlSession_SameAnswers) {
  // etcd 3.4 from Debian, on ports of our choosing.
  Subprocess etcd;
  std::string etcd_ep;
  ASSERT_NO_FATAL_FAILURE(StartEtcd(&etcd, "etcd", &etcd_ep));
  LocalCluster lockd(1, "diff");
  ASSERT_TRUE(lockd.StartAll().ok());
  ASSERT_NE(lockd.WaitForLeader(absl::Seconds(30)), 0u);

  const std::vector<Step> session = {
      {{"put", "a", "1"}},
      {{"put", "a", "2", "--prev-kv"}},
      {{"put", "b", "3"}},
      {{"put", "c/x", "4"}},
      {{"put", "c/y", "5"}},
      {{"get", "a"}},
      {{"get", "a", "-w", "json"}},
      {{"get", "a", "--rev=2"}},
      {{"get", "a", "--rev=2", "-w", "json"}},
      {{"get", "c/", "--prefix", "-w", "json"}},
      {{"get", "a", "c"}},
      {{"get", "b", "--from-key", "--keys-only"}},
      {{"get", "", "--from-key", "--limit=2", "-w", "json"}},
      {{"get", "c/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"}},
      {{"get", "c/", "--prefix", "--sort-by=CREATE", "--order=ASCEND",
        "--print-value-only"}},
      {{"get", "nothing-here"}},
      {{"get", "nothing-here", "-w", "json"}},
      {{"get", "a", "--consistency=s", "-w", "json"}},
      {{"txn"}, "value(\"a\") = \"2\"\n\nput a 3\nget b\n\nput a fail\n\n"},
      {{"txn", "-w", "json"}, "version(\"a\") > \"5\"\n\nput a x\n\nget a\n\n"},
      {{"txn"},
       "mod(\"c/x\") < \"100\"\ncreate(\"b\") = \"4\"\n\ndel c/ "
       "--prefix\n\n\n"},
      {{"get", "", "--from-key", "-w", "json"}},
      {{"del", "a", "--prev-kv"}},
      {{"del", "a"}},
      {{"del", "", "--from-key", "-w", "json"}},
      {{"put", "d", "6"}},
      {{"compaction", "4"}},
      {{"get", "a", "--rev=3"}},
      {{"get", "d", "--rev=3"}},
      {{"get", "d", "--rev=100"}},
      {{"compaction", "2"}},
      {{"compaction", "100"}},
      {{"put", "", "empty-key"}},
      {{"get", "d", "-w", "json"}},
  };

  int answered = 0;  // steps where lockd printed something on stdout
  const std::string lockd_ep = lockd.member(0).endpoint();
  for (size_t i = 0; i < session.size(); ++i) {
    const Step& step = session[i];
    CommandResult want = RunStep(etcd_ep, step);
    CommandResult got = RunStep(lockd_ep, step);
    std::string what =
        absl::StrCat("step ", i, ": etcdctl ", absl::StrJoin(step.args, " "));
    EXPECT_EQ(got.exit_code, want.exit_code)
        << what << "\netcd: " << want.err << "\nlockd: " << got.err;
    EXPECT_EQ(Normalize(got.out), Normalize(want.out)) << what;
    EXPECT_EQ(Normalize(got.err), Normalize(want.err)) << what;
    if (!got.out.empty()) ++answered;
    if (i == 5) {
      EXPECT_EQ(got.out, "a\n2\n");  // not vacuous
    }
  }
  EXPECT_GE(answered, 26);
  etcd.Stop();
}

// The same session on the JSON gateway (curl, HTTP/1.1 on the client port)
// against etcd 3.4 and lockd: every answer's HTTP status and body must match
// once IDs, raft terms and lease IDs are masked.
struct HttpStep {
  std::string path;
  std::string body;  // POSTed when not empty; GET otherwise
};

std::pair<int, std::string> RunHttp(const std::string& endpoint,
                                    const HttpStep& step) {
  std::vector<std::string> argv = {"curl", "-sS", "-m",
                                   "20",   "-w",  "\n%{http_code}"};
  if (!step.body.empty()) argv.insert(argv.end(), {"--data-binary", step.body});
  argv.push_back(absl::StrCat("http://", endpoint, step.path));
  absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(30));
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return {0, ""};
  const size_t nl = r->out.rfind('\n');
  if (nl == std::string::npos) return {0, r->out + r->err};
  return {std::atoi(r->out.c_str() + nl + 1), r->out.substr(0, nl)};
}

std::string NormalizeJson(std::string s) {
  static const std::regex kIds(
      R"re("(cluster_id|member_id|raft_term|ID)":"[0-9]+")re");
  return std::regex_replace(s, kIds, "\"$1\":\"N\"");
}

TEST(DifferentialTest, SameGatewaySession_SameAnswers) {
  Subprocess etcd;
  std::string etcd_ep;
  ASSERT_NO_FATAL_FAILURE(StartEtcd(&etcd, "etcd-gw", &etcd_ep));
  LocalCluster lockd(1, "diff-gw");
  ASSERT_TRUE(lockd.StartAll().ok());
  ASSERT_NE(lockd.WaitForLeader(absl::Seconds(30)), 0u);

  // Keys and values in base64: "a" YQ==, "b" Yg==, "c/x" Yy94, "c/y" Yy95,
  // "c0" YzA=, "1" MQ==, "2" Mg==, "3" Mw==.
  const std::vector<HttpStep> session = {
      {"/health", ""},
      {"/v3/kv/put", R"({"key":"YQ==","value":"MQ=="})"},
      {"/v3/kv/put", R"({"key":"YQ==","value":"Mg==","prev_kv":true})"},
      {"/v3/kv/put", R"({"key":"Yy94","value":"Mw=="})"},
      {"/v3/kv/put", R"({"key":"Yy95","value":"Mw==","lease":"999"})"},
      {"/v3/kv/put", R"({"value":"Mw=="})"},
      {"/v3/kv/range", R"({"key":"YQ=="})"},
      {"/v3/kv/range", R"({"key":"YQ==","revision":"2"})"},
      {"/v3/kv/range", R"({"key":"Yy8=","range_end":"YzA=","keys_only":true})"},
      {"/v3/kv/range", R"({"key":"AA==","range_end":"AA==","limit":"1"})"},
      {"/v3/kv/range",
       R"({"key":"Yy8=","range_end":"YzA=","count_only":true})"},
      {"/v3/kv/range",
       R"({"key":"Yy8=","range_end":"YzA=","sort_order":"DESCEND","sort_target":"KEY"})"},
      {"/v3/kv/range", R"({"key":"YQ==","revision":"100"})"},
      {"/v3/kv/range", R"({"key":"YQ==","unknown_field":1})"},
      {"/v3/kv/txn",
       R"({"compare":[{"key":"YQ==","target":"VALUE","result":"EQUAL","value":"Mg=="}],"success":[{"request_put":{"key":"Yg==","value":"MQ=="}},{"request_range":{"key":"YQ=="}}],"failure":[{"request_delete_range":{"key":"YQ=="}}]})"},
      {"/v3/kv/txn",
       R"({"compare":[{"key":"YQ==","target":"VERSION","result":"GREATER","version":"5"}],"failure":[{"request_delete_range":{"key":"YQ==","prev_kv":true}}]})"},
      {"/v3/kv/deleterange",
       R"({"key":"Yy8=","range_end":"YzA=","prev_kv":true})"},
      {"/v3/kv/compaction", R"({"revision":"3"})"},
      {"/v3/kv/range", R"({"key":"YQ==","revision":"2"})"},
      {"/v3/kv/compaction", R"({"revision":"100"})"},
      {"/v3beta/kv/range", R"({"key":"Yg=="})"},
      {"/v3/lease/grant", R"({"TTL":"60","ID":"4242"})"},
      {"/v3/lease/grant", R"({"TTL":"60","ID":"4242"})"},
      {"/v3/kv/put", R"({"key":"bA==","value":"MQ==","lease":"4242"})"},
      {"/v3/kv/lease/timetolive", R"({"ID":"4242","keys":true})"},
      {"/v3/lease/leases", "{}"},
      {"/v3/lease/revoke", R"({"ID":"4242"})"},
      {"/v3/lease/revoke", R"({"ID":"4242"})"},
      {"/v3/lease/keepalive", R"({"ID":"4242"})"},
      {"/v3/watch",
       R"({"create_request":{"key":"YQ==","start_revision":"1"}})"},
      {"/v3/kv/range", "{not json"},
      {"/v3/kv/range", ""},
  };
  const std::string lockd_ep = lockd.member(0).endpoint();
  int ok = 0;
  for (size_t i = 0; i < session.size(); ++i) {
    HttpStep step = session[i];
    const bool watch = step.path == "/v3/watch";
    std::pair<int, std::string> want, got;
    if (watch) {
      // A watch stays open: compare what arrives within 2 s.
      auto run = [&](const std::string& ep) {
        absl::StatusOr<CommandResult> r =
            RunCommand({"curl", "-sS", "-N", "-m", "2", "--data-binary",
                        step.body, absl::StrCat("http://", ep, step.path)},
                       absl::Seconds(20));
        EXPECT_TRUE(r.ok()) << r.status();
        return std::make_pair(r.ok() ? r->exit_code : -1, r.ok() ? r->out : "");
      };
      want = run(etcd_ep);
      got = run(lockd_ep);
    } else {
      want = RunHttp(etcd_ep, step);
      got = RunHttp(lockd_ep, step);
    }
    const std::string what =
        absl::StrCat("step ", i, ": ", step.path, " ", step.body);
    EXPECT_EQ(got.first, want.first)
        << what << "\netcd: " << want.second << "\nlockd: " << got.second;
    // etcd's JSON parse errors are Go's wording; only the code must match.
    if (step.body == "{not json") continue;
    EXPECT_EQ(NormalizeJson(got.second), NormalizeJson(want.second)) << what;
    if (want.first == 200) ++ok;
  }
  EXPECT_GE(ok, 20);  // not vacuous

  // Every metric lockd exports is one etcd exports, of the same type.
  std::pair<int, std::string> etcd_metrics = RunHttp(etcd_ep, {"/metrics", ""});
  std::pair<int, std::string> lockd_metrics =
      RunHttp(lockd_ep, {"/metrics", ""});
  EXPECT_EQ(lockd_metrics.first, 200);
  int families = 0;
  for (absl::string_view line : absl::StrSplit(lockd_metrics.second, '\n')) {
    if (!absl::StartsWith(line, "# TYPE ")) continue;
    ++families;
    EXPECT_TRUE(
        absl::StrContains(etcd_metrics.second, absl::StrCat(line, "\n")))
        << line;
  }
  EXPECT_GE(families, 15);
  // Histograms have etcd's buckets, bound for bound.
  int buckets = 0;
  for (absl::string_view line : absl::StrSplit(lockd_metrics.second, '\n')) {
    const size_t le = line.find("_bucket{le=\"");
    if (le == absl::string_view::npos) continue;
    ++buckets;
    const absl::string_view series = line.substr(0, line.find(' '));
    EXPECT_TRUE(
        absl::StrContains(etcd_metrics.second, absl::StrCat("\n", series, " ")))
        << series;
  }
  EXPECT_GE(buckets, 30);
  etcd.Stop();
}

}  // namespace
}  // namespace lockd::testing
