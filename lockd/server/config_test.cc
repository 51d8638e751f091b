#include "lockd/server/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>

namespace lockd {
namespace {

TEST(ParseUrlTest, ParseUrl_AcceptsHostPortForms) {
  absl::StatusOr<Url> u = ParseUrl("http://127.0.0.1:2379");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 2379);
  EXPECT_EQ(u->ToString(), "http://127.0.0.1:2379");

  u = ParseUrl("http://[::1]:2380/");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->HostPort(), "[::1]:2380");
}

TEST(ParseUrlTest, ParseUrl_RejectsMalformed) {
  for (const char* bad :
       {"127.0.0.1:2379", "http://127.0.0.1", "http://127.0.0.1:99999",
        "ftp://1.2.3.4:1", "http://:2379", "http://1.2.3.4:2379/path",
        "http://[::1:2379"}) {
    EXPECT_EQ(ParseUrl(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

// etcd's well-known IDs for a default single member: the same configuration
// must yield the same member and cluster IDs.
TEST(ComputeIdTest, ComputeMemberId_MatchesEtcdDefaults) {
  ServerConfig c;
  ASSERT_TRUE(ValidateConfig(c, false, false).ok());
  EXPECT_EQ(c.member_id, 0x8e9e05c52164694dULL);
  EXPECT_EQ(c.cluster_id, 0xcdf818194e3a8c32ULL);
  EXPECT_EQ(c.data_dir, "default.lockd");
}

ServerConfig ThreeMembers() {
  ServerConfig c;
  c.name = "m2";
  c.listen_client_urls = "http://127.0.0.1:22379";
  c.advertise_client_urls = "http://127.0.0.1:22379";
  c.listen_peer_urls = "http://127.0.0.1:22380";
  c.initial_advertise_peer_urls = "http://127.0.0.1:22380";
  c.initial_cluster =
      "m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380,"
      "m3=http://127.0.0.1:32380";
  return c;
}

TEST(ValidateConfigTest, ValidateConfig_ThreeMembersSortedById) {
  ServerConfig c = ThreeMembers();
  ASSERT_TRUE(ValidateConfig(c, true, true).ok());
  ASSERT_EQ(c.members.size(), 3u);
  EXPECT_LT(c.members[0].id, c.members[1].id);
  EXPECT_LT(c.members[1].id, c.members[2].id);
  EXPECT_NE(c.member_id, 0u);
  // Every member computes the same cluster ID from the same flags.
  ServerConfig other = ThreeMembers();
  other.name = "m1";
  other.initial_advertise_peer_urls = "http://127.0.0.1:12380";
  ASSERT_TRUE(ValidateConfig(other, true, true).ok());
  EXPECT_EQ(other.cluster_id, c.cluster_id);
  EXPECT_NE(other.member_id, c.member_id);
}

TEST(ValidateConfigTest, ValidateConfig_UnknownLocalName) {
  ServerConfig c = ThreeMembers();
  c.name = "m9";
  absl::Status s = ValidateConfig(c, true, true);
  EXPECT_EQ(s.message(),
            "couldn't find local name \"m9\" in the initial cluster "
            "configuration");
}

TEST(ValidateConfigTest, ValidateConfig_AdvertisedPeerMismatch) {
  ServerConfig c = ThreeMembers();
  c.initial_advertise_peer_urls = "http://127.0.0.1:22381";
  absl::Status s = ValidateConfig(c, true, true);
  EXPECT_NE(s.message().find("--initial-cluster has m2=http://127.0.0.1:22380 "
                             "but missing from --initial-advertise-peer-urls"),
            absl::string_view::npos)
      << s;
}

TEST(ValidateConfigTest, ValidateConfig_ListenNeedsIp) {
  ServerConfig c;
  c.listen_client_urls = "http://example.com:2379";
  c.advertise_client_urls = "http://example.com:2379";
  EXPECT_EQ(ValidateConfig(c, true, true).message(),
            "expected IP in URL for binding (http://example.com:2379)");
}

TEST(ValidateConfigTest, ValidateConfig_ListenWithoutAdvertise) {
  ServerConfig c;
  c.listen_client_urls = "http://127.0.0.1:2379";
  EXPECT_EQ(ValidateConfig(c, true, false).message(),
            "--advertise-client-urls is required when --listen-client-urls "
            "is set explicitly");
}

TEST(ValidateConfigTest, ValidateConfig_BadClusterState) {
  ServerConfig c;
  c.initial_cluster_state = "old";
  EXPECT_EQ(ValidateConfig(c, false, false).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ValidateConfigTest, ValidateConfig_DuplicatePeerUrl) {
  ServerConfig c = ThreeMembers();
  c.initial_cluster = "m1=http://127.0.0.1:22380,m2=http://127.0.0.1:22380";
  EXPECT_NE(ValidateConfig(c, true, true).message().find("duplicate URL"),
            absl::string_view::npos);
}

TEST(ValidateConfigTest, ValidateConfig_ElectionTimeoutVsHeartbeat) {
  ServerConfig c;
  c.heartbeat_interval_ms = 500;
  c.election_timeout_ms = 1000;
  EXPECT_EQ(ValidateConfig(c, false, false).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PrepareDataDirTest, PrepareDataDir_CreatesAndRejectsFiles) {
  std::string base = std::getenv("TEST_TMPDIR");
  std::string dir = base + "/member-data";
  ASSERT_TRUE(PrepareDataDir(dir).ok());
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  // Idempotent.
  EXPECT_TRUE(PrepareDataDir(dir).ok());

  std::string file = base + "/plain-file";
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  absl::Status s = PrepareDataDir(file);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("cannot access data directory"),
            absl::string_view::npos);
  EXPECT_EQ(PrepareDataDir(file + "/sub").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ConfigTest, ParseAutoCompaction_EtcdsReadingOfTheFlags) {
  auto parse = [](const std::string& mode, const std::string& retention) {
    return ParseAutoCompaction(mode, retention);
  };
  EXPECT_FALSE(parse("periodic", "0")->enabled());
  EXPECT_FALSE(parse("revision", "0")->enabled());
  EXPECT_EQ(parse("periodic", "1")->period, absl::Hours(1));  // bare: hours
  EXPECT_EQ(parse("periodic", "30m")->period, absl::Minutes(30));
  EXPECT_EQ(parse("periodic", "1h30m")->period, absl::Minutes(90));
  EXPECT_EQ(parse("revision", "1000")->revisions, 1000);
  EXPECT_EQ(parse("revision", "1000")->period, absl::ZeroDuration());
  EXPECT_NE(parse("weekly", "1")
                .status()
                .message()
                .find("unknown auto-compaction-mode \"weekly\""),
            std::string::npos);
  EXPECT_NE(
      parse("revision", "5m").status().message().find("number of revisions"),
      std::string::npos);
  EXPECT_FALSE(parse("periodic", "-1").ok());
  EXPECT_FALSE(parse("periodic", "soon").ok());
  EXPECT_NE(parse("periodic", "10ms").status().message().find("too short"),
            std::string::npos);
  // ValidateConfig reads them.
  ServerConfig c = ThreeMembers();
  c.auto_compaction_retention = "2h";
  ASSERT_TRUE(ValidateConfig(c, true, true).ok());
  EXPECT_EQ(c.auto_compaction.period, absl::Hours(2));
  c.auto_compaction_mode = "sometimes";
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateConfig(c, true, true)));
}

TEST(IdentityTest, LoadOrStoreIdentity_RestartIgnoresChangedFlags) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/ident";
  ASSERT_TRUE(PrepareDataDir(dir).ok());
  ServerConfig first = ThreeMembers();
  ASSERT_TRUE(ValidateConfig(first, true, true).ok());
  bool restarted = true;
  ASSERT_TRUE(LoadOrStoreIdentity(dir, first, &restarted).ok());
  EXPECT_FALSE(restarted);

  // Same member, restarted with another token and cluster list.
  ServerConfig again = ThreeMembers();
  again.initial_cluster_token = "something-else";
  again.initial_cluster = "m2=http://127.0.0.1:22380";
  ASSERT_TRUE(ValidateConfig(again, true, true).ok());
  ASSERT_NE(again.member_id, first.member_id);
  ASSERT_TRUE(LoadOrStoreIdentity(dir, again, &restarted).ok());
  EXPECT_TRUE(restarted);
  EXPECT_EQ(again.member_id, first.member_id);
  EXPECT_EQ(again.cluster_id, first.cluster_id);
  ASSERT_EQ(again.members.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(again.members[i].id, first.members[i].id);
    EXPECT_EQ(again.members[i].peer_urls, first.members[i].peer_urls);
  }

  // Another member's data directory is refused.
  ServerConfig other = ThreeMembers();
  other.name = "m1";
  other.initial_advertise_peer_urls = "http://127.0.0.1:12380";
  ASSERT_TRUE(ValidateConfig(other, true, true).ok());
  absl::Status s = LoadOrStoreIdentity(dir, other, &restarted);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("belongs to member \"m2\""),
            absl::string_view::npos)
      << s;
}

TEST(ValidateConfigTest, ValidateConfig_HttpsNeedsTlsFlagsAsEtcd) {
  ServerConfig c;
  c.listen_client_urls = c.advertise_client_urls = "https://127.0.0.1:2379";
  absl::Status s = ValidateConfig(c, true, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "TLS key/cert (--cert-file, --key-file) must be provided for "
            "client url https://127.0.0.1:2379 with HTTPS scheme");

  c.client_tls.cert_file = "server.crt";
  c.client_tls.key_file = "server.key";
  ASSERT_TRUE(ValidateConfig(c, true, true).ok());
  EXPECT_TRUE(c.client_https);
  EXPECT_FALSE(c.peer_https);

  c.client_tls.client_cert_auth = true;
  s = ValidateConfig(c, true, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--trusted-ca-file"), absl::string_view::npos)
      << s;
  c.client_tls.trusted_ca_file = "ca.crt";
  EXPECT_TRUE(ValidateConfig(c, true, true).ok());

  c.client_tls.key_file.clear();
  c.listen_client_urls = c.advertise_client_urls = "http://127.0.0.1:2379";
  s = ValidateConfig(c, true, true);
  EXPECT_EQ(s.message(), "--cert-file and --key-file must be given together");
}

TEST(ValidateConfigTest, ValidateConfig_MetricsUrlsStayHttp) {
  ServerConfig c;
  c.listen_metrics_urls = "https://127.0.0.1:2381";
  absl::Status s = ValidateConfig(c, false, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("https is not supported for metrics URLs"),
            absl::string_view::npos)
      << s;
  c.listen_metrics_urls = "http://127.0.0.1:2381";
  EXPECT_TRUE(ValidateConfig(c, false, false).ok());
}

TEST(ValidateConfigTest, ValidateConfig_PeerTlsIsAllOrNothing) {
  ServerConfig c;
  c.listen_peer_urls = c.initial_advertise_peer_urls = "https://127.0.0.1:2380";
  absl::Status s = ValidateConfig(c, false, false);
  EXPECT_EQ(s.message(),
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile "
            "are not presented (set --peer-cert-file and --peer-key-file)");
  c.peer_tls.cert_file = "peer.crt";
  c.peer_tls.key_file = "peer.key";
  ASSERT_TRUE(ValidateConfig(c, false, false).ok());
  EXPECT_TRUE(c.peer_https);
  // The https scheme is part of the URL etcd hashes into the member ID.
  EXPECT_NE(c.member_id, 0x8e9e05c52164694dULL);

  c.peer_tls.client_cert_auth = true;
  EXPECT_NE(
      ValidateConfig(c, false, false).message().find("--peer-trusted-ca-file"),
      absl::string_view::npos);
  c.peer_tls.trusted_ca_file = "ca.crt";
  EXPECT_TRUE(ValidateConfig(c, false, false).ok());

  c.initial_cluster =
      "default=https://127.0.0.1:2380,other=http://127.0.0.1:3380";
  s = ValidateConfig(c, false, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("mix http and https"), absl::string_view::npos)
      << s;
}

}  // namespace
}  // namespace lockd
