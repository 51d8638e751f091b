#include "lockd/ctl/output.h"

#include <gtest/gtest.h>

#include <string>

#include "etcdserverpb/rpc.pb.h"

namespace lockd::ctl {
namespace {

TEST(ToJsonTest, MatchesEtcdctlForARange) {
  // What Debian's etcdctl 3.4 printed for `get foo -w json` against the
  // same response.
  etcdserverpb::RangeResponse r;
  r.mutable_header()->set_cluster_id(11907723985852537349u);
  r.mutable_header()->set_member_id(15985099378392235387u);
  r.mutable_header()->set_revision(2);
  r.mutable_header()->set_raft_term(2);
  auto* kv = r.add_kvs();
  kv->set_key("foo");
  kv->set_create_revision(2);
  kv->set_mod_revision(2);
  kv->set_version(1);
  kv->set_value("bar");
  r.set_count(1);
  EXPECT_EQ(ToJson(r),
            "{\"header\":{\"cluster_id\":11907723985852537349,\"member_id\":"
            "15985099378392235387,\"revision\":2,\"raft_term\":2},\"kvs\":[{"
            "\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":2,"
            "\"version\":1,\"value\":\"YmFy\"}],\"count\":1}");
}

TEST(ToJsonTest, EnumsAsNumbersAndStringsEscaped) {
  etcdserverpb::MemberListResponse m;
  auto* member = m.add_members();
  member->set_id(1);
  member->set_name("a\"b\\c\n");
  member->add_peerurls("http://x:1");
  EXPECT_EQ(ToJson(m),
            "{\"members\":[{\"ID\":1,\"name\":\"a\\\"b\\\\c\\n\",\"peerURLs\":"
            "[\"http://x:1\"]}]}");
  etcdserverpb::AlarmResponse a;
  auto* alarm = a.add_alarms();
  alarm->set_memberid(7);
  alarm->set_alarm(etcdserverpb::NOSPACE);
  EXPECT_EQ(ToJson(a), "{\"alarms\":[{\"memberID\":7,\"alarm\":1}]}");
}

TEST(HumanBytesTest, AsEtcdctlPrintsSizes) {
  EXPECT_EQ(HumanBytes(999), "999 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 kB");
  EXPECT_EQ(HumanBytes(12288), "12 kB");  // etcdctl: "12 kB", not 12.3
  EXPECT_EQ(HumanBytes(9960), "10 kB");   // rounded before choosing
  EXPECT_EQ(HumanBytes(33913376), "34 MB");
}

TEST(ErrorWithHintTest, SaysWhatToDoNext) {
  // Nothing reached the cluster.
  EXPECT_EQ(ErrorWithHint(absl::UnavailableError(
                "cannot connect to 127.0.0.1:2379: check that the member is "
                "running and the endpoint is right")),
            "cannot connect to 127.0.0.1:2379: check that the member is "
            "running and the endpoint is right\n(is the cluster up and "
            "reachable? check --endpoints, then 'lockctl endpoint health')");
  // The cluster answered; the change may have happened.
  for (const char* m :
       {"etcdserver: leader changed", "etcdserver: request timed out",
        "etcdserver: request timed out, possibly due to previous leader "
        "failure"}) {
    const std::string out = ErrorWithHint(absl::UnavailableError(m));
    EXPECT_EQ(out.substr(0, out.find('\n')), m);
    EXPECT_NE(out.find("may or may not have taken effect"), std::string::npos)
        << out;
    EXPECT_EQ(out.find("is the cluster up"), std::string::npos) << out;
  }
  EXPECT_NE(ErrorWithHint(absl::DeadlineExceededError("Deadline Exceeded"))
                .find("--command-timeout"),
            std::string::npos);
  // etcd's own wording is enough.
  EXPECT_EQ(ErrorWithHint(
                absl::InvalidArgumentError("etcdserver: key is not provided")),
            "etcdserver: key is not provided");
}

}  // namespace
}  // namespace lockd::ctl
