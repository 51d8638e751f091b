// TLS on the client and peer ports, with etcd's flags: a 3-member cluster
// whose clients and peers all speak TLS with client certificates required,
// driven by Debian's etcdctl and by lockctl; and the flag mistakes a member
// refuses to start with. The CA and certificates are made with the openssl
// CLI at test time, under TEST_TMPDIR.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// A CA, a member certificate (for 127.0.0.1 and localhost, usable as a
// server and as a client: members present it to each other) and a client
// certificate, all signed by the CA.
struct Pki {
  std::string ca;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
};

absl::Status Openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(30));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat("openssl ", args[0], " failed (",
                                            r->exit_code, "): ", r->err));
  }
  return absl::OkStatus();
}

// Signs a fresh P-256 key's certificate for `cn` with the CA, with the
// extensions in `ext` (an openssl extension file's lines).
absl::Status Issue(const std::string& dir, const std::string& name,
                   const std::string& cn, const std::string& ext) {
  const std::string base = absl::StrCat(dir, "/", name);
  std::ofstream(base + ".ext") << ext;
  if (absl::Status s =
          Openssl({"req", "-new", "-newkey", "ec", "-pkeyopt",
                   "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                   base + ".key", "-out", base + ".csr", "-subj", "/CN=" + cn});
      !s.ok()) {
    return s;
  }
  return Openssl({"x509", "-req", "-in", base + ".csr", "-CA", dir + "/ca.crt",
                  "-CAkey", dir + "/ca.key", "-set_serial",
                  name == "server" ? "2" : "3", "-days", "2", "-out",
                  base + ".crt", "-extfile", base + ".ext"});
}

absl::StatusOr<Pki> MakePki() {
  const std::string dir = TempDir("pki");
  if (absl::Status s = Openssl(
          {"req", "-x509", "-newkey", "ec", "-pkeyopt",
           "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", dir + "/ca.key",
           "-out", dir + "/ca.crt", "-days", "2", "-subj", "/CN=lockd-test-ca",
           "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
           "keyUsage=critical,keyCertSign,cRLSign"});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Issue(dir, "server", "lockd-member",
                             "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                             "keyUsage=critical,digitalSignature\n"
                             "extendedKeyUsage=serverAuth,clientAuth\n");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Issue(dir, "client", "lockd-client",
                             "keyUsage=critical,digitalSignature\n"
                             "extendedKeyUsage=clientAuth\n");
      !s.ok()) {
    return s;
  }
  return Pki{dir + "/ca.crt", dir + "/server.crt", dir + "/server.key",
             dir + "/client.crt", dir + "/client.key"};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

class TlsClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Pki> pki = MakePki();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
    client_flags_ = {"--cacert=" + pki_.ca, "--cert=" + pki_.client_cert,
                     "--key=" + pki_.client_key};
  }

  // Every TLS flag of a kubeadm-style member: TLS with client certificates
  // required on both ports.
  std::vector<std::string> MemberTlsFlags() const {
    return {"--cert-file=" + pki_.server_cert,
            "--key-file=" + pki_.server_key,
            "--trusted-ca-file=" + pki_.ca,
            "--client-cert-auth",
            "--peer-cert-file=" + pki_.server_cert,
            "--peer-key-file=" + pki_.server_key,
            "--peer-trusted-ca-file=" + pki_.ca,
            "--peer-client-cert-auth"};
  }

  std::shared_ptr<grpc::ChannelCredentials> ClientCredentials() const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadFile(pki_.ca);
    o.pem_cert_chain = ReadFile(pki_.client_cert);
    o.pem_private_key = ReadFile(pki_.client_key);
    return grpc::SslCredentials(o);
  }

  // etcdctl with the client certificate.
  CommandResult SecureEtcdctl(const std::string& endpoints,
                              std::vector<std::string> args) {
    args.insert(args.begin(), client_flags_.begin(), client_flags_.end());
    return Etcdctl(endpoints, args);
  }

  Pki pki_;
  std::vector<std::string> client_flags_;
};

TEST_F(TlsClusterTest, ThreeMembers_TlsClientsAndPeers_EtcdctlAndLockctl) {
  LocalCluster cluster(3, "tls");
  cluster.set_schemes("https", "https");
  cluster.set_client_credentials(ClientCredentials());
  for (int i = 0; i < cluster.size(); ++i) {
    ASSERT_TRUE(cluster.StartMember(i, MemberTlsFlags()).ok())
        << cluster.process(i).output();
  }
  // A leader and every member published: raft and the publish writes
  // travelled between members over TLS with client certificates.
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  ASSERT_TRUE(cluster.WaitForPublished(absl::Seconds(30)));
  EXPECT_TRUE(cluster.process(0).WaitForOutput(
      "serves gRPC over TLS only (client certificates required)",
      absl::Seconds(1)))
      << cluster.process(0).output();

  // Writes through every member (followers forward to the leader's peer
  // port), each read back linearizably through every member.
  for (int i = 0; i < cluster.size(); ++i) {
    const std::string key = absl::StrCat("tls-key-", i);
    CommandResult put = SecureEtcdctl(cluster.member(i).scheme_endpoint(),
                                      {"put", key, absl::StrCat("v", i)});
    ASSERT_EQ(put.exit_code, 0) << put.out << put.err;
    EXPECT_EQ(put.out, "OK\n");
    for (int j = 0; j < cluster.size(); ++j) {
      CommandResult get =
          SecureEtcdctl(cluster.member(j).scheme_endpoint(), {"get", key});
      ASSERT_EQ(get.exit_code, 0) << get.out << get.err;
      EXPECT_EQ(get.out, absl::StrCat(key, "\nv", i, "\n")) << "member " << j;
    }
  }

  // --cluster: the members' advertised https client URLs, each reached
  // over TLS.
  CommandResult status = SecureEtcdctl(cluster.member(0).scheme_endpoint(),
                                       {"endpoint", "status", "--cluster"});
  ASSERT_EQ(status.exit_code, 0) << status.out << status.err;
  std::vector<std::string> lines =
      absl::StrSplit(status.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << status.out;
  for (int i = 0; i < cluster.size(); ++i) {
    EXPECT_TRUE(absl::StrContains(status.out, cluster.member(i).client_url()))
        << status.out;
  }

  // lockctl with etcdctl's flags, through a follower and the whole list.
  std::vector<std::string> lockctl_put = client_flags_;
  lockctl_put.insert(lockctl_put.end(), {"put", "from-lockctl", "yes"});
  CommandResult lput =
      Lockctl(cluster.member(1).scheme_endpoint(), lockctl_put);
  ASSERT_EQ(lput.exit_code, 0) << lput.out << lput.err;
  std::vector<std::string> lockctl_get = client_flags_;
  lockctl_get.insert(lockctl_get.end(), {"get", "from-lockctl"});
  std::string all;
  for (int i = 0; i < cluster.size(); ++i) {
    absl::StrAppend(&all, i == 0 ? "" : ",",
                    cluster.member(i).scheme_endpoint());
  }
  CommandResult lget = Lockctl(all, lockctl_get);
  ASSERT_EQ(lget.exit_code, 0) << lget.out << lget.err;
  EXPECT_EQ(lget.out, "from-lockctl\nyes\n");
  std::vector<std::string> lockctl_status = client_flags_;
  lockctl_status.insert(lockctl_status.end(),
                        {"endpoint", "status", "--cluster"});
  CommandResult lstatus =
      Lockctl(cluster.member(2).scheme_endpoint(), lockctl_status);
  ASSERT_EQ(lstatus.exit_code, 0) << lstatus.out << lstatus.err;
  EXPECT_EQ(std::vector<std::string>(
                absl::StrSplit(lstatus.out, '\n', absl::SkipEmpty()))
                .size(),
            3u)
      << lstatus.out;
  // The same binary reads no key file it was not given.
  CommandResult missing =
      Lockctl(cluster.member(0).scheme_endpoint(),
              {"--cacert=" + pki_.ca, "--cert=" + pki_.client_cert,
               "--key=/nonexistent.key", "get", "x"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(missing.err, "/nonexistent.key"))
      << missing.err;

  // Refused: a client without a certificate (the server requires one), and
  // a plaintext client on the TLS port.
  CommandResult no_cert = Etcdctl(cluster.member(0).scheme_endpoint(),
                                  {"--cacert=" + pki_.ca, "get", "tls-key-0"});
  EXPECT_NE(no_cert.exit_code, 0) << no_cert.out;
  EXPECT_FALSE(absl::StrContains(no_cert.out, "v0")) << no_cert.out;
  CommandResult plain =
      Etcdctl(cluster.member(0).endpoint(), {"get", "tls-key-0"});
  EXPECT_NE(plain.exit_code, 0) << plain.out;
  EXPECT_FALSE(absl::StrContains(plain.out, "v0")) << plain.out;
  // The member says why it refused each, in its own log format, with what
  // the client has to change.
  EXPECT_TRUE(cluster.process(0).WaitForOutput(
      "TLS handshake failed (peer did not return a certificate): the other "
      "side sent no certificate",
      absl::Seconds(10)))
      << cluster.process(0).output();
  EXPECT_TRUE(cluster.process(0).WaitForOutput(
      "W | grpc: rejected a connection: TLS handshake failed (wrong version "
      "number)",
      absl::Seconds(10)))
      << cluster.process(0).output();
  EXPECT_FALSE(
      absl::StrContains(cluster.process(0).output(), "ssl_transport_security"))
      << cluster.process(0).output();
}

// A member started with `flags` (its own data directory and ports) exits
// at once; returns its exit code and output.
CommandResult RunMember(std::vector<std::string> flags) {
  const int client_port = PickFreePort();
  int peer_port;
  do {
    peer_port = PickFreePort();
  } while (peer_port == client_port);
  std::vector<std::string> argv = {
      Runfile("lockd/lockd"),
      "--name=bad",
      "--data-dir=" + TempDir(absl::StrCat("bad-", client_port)),
      absl::StrCat("--listen-peer-urls=http://127.0.0.1:", peer_port),
      absl::StrCat("--initial-advertise-peer-urls=http://127.0.0.1:",
                   peer_port),
  };
  for (std::string& f : flags) {
    absl::StrReplaceAll({{"$PORT", absl::StrCat(client_port)}}, &f);
    argv.push_back(f);
  }
  absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(30));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : CommandResult{};
}

TEST_F(TlsClusterTest, BadFlags_ExitWithEtcdsErrors) {
  const std::string https = "https://127.0.0.1:$PORT";
  CommandResult no_cert = RunMember(
      {"--listen-client-urls=" + https, "--advertise-client-urls=" + https});
  EXPECT_EQ(no_cert.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(
      no_cert.err,
      "TLS key/cert (--cert-file, --key-file) must be provided for client "
      "url https://127.0.0.1:"))
      << no_cert.err;

  CommandResult no_ca = RunMember(
      {"--listen-client-urls=" + https, "--advertise-client-urls=" + https,
       "--cert-file=" + pki_.server_cert, "--key-file=" + pki_.server_key,
       "--client-cert-auth"});
  EXPECT_EQ(no_ca.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(no_ca.err, "--trusted-ca-file")) << no_ca.err;

  const std::string missing_key = TempDir("keys") + "/missing.key";
  CommandResult no_key = RunMember(
      {"--listen-client-urls=" + https, "--advertise-client-urls=" + https,
       "--cert-file=" + pki_.server_cert, "--key-file=" + missing_key});
  EXPECT_EQ(no_key.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(no_key.out + no_key.err,
                                "cannot read --key-file " + missing_key))
      << no_key.out << no_key.err;

  // The client's key beside the member's certificate: they do not match.
  CommandResult mismatch = RunMember(
      {"--listen-client-urls=" + https, "--advertise-client-urls=" + https,
       "--cert-file=" + pki_.server_cert, "--key-file=" + pki_.client_key});
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(mismatch.out + mismatch.err,
                                "does not match --cert-file"))
      << mismatch.out << mismatch.err;
}

}  // namespace
}  // namespace lockd::testing
