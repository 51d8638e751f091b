#include "tests/harness/cluster.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace lockd::testing {

std::string MemberSpec::client_url() const {
  return absl::StrCat(client_scheme, "://127.0.0.1:", client_port);
}
std::string MemberSpec::peer_url() const {
  return absl::StrCat(peer_scheme, "://127.0.0.1:", peer_port);
}
std::string MemberSpec::endpoint() const {
  return absl::StrCat("127.0.0.1:", client_port);
}
std::string MemberSpec::scheme_endpoint() const {
  return client_scheme == "http" ? endpoint() : client_url();
}

LocalCluster::LocalCluster(int size, const std::string& tag) : tag_(tag) {
  for (int i = 0; i < size; ++i) AddSpec();
}

LocalCluster::~LocalCluster() = default;

void LocalCluster::set_schemes(const std::string& client,
                               const std::string& peer) {
  client_scheme_ = client;
  peer_scheme_ = peer;
  for (MemberSpec& s : specs_) {
    s.client_scheme = client;
    s.peer_scheme = peer;
  }
}

std::shared_ptr<grpc::ChannelCredentials> LocalCluster::Credentials() const {
  return credentials_ != nullptr ? credentials_
                                 : grpc::InsecureChannelCredentials();
}

int LocalCluster::AddSpec() {
  MemberSpec s;
  s.name = absl::StrCat("m", specs_.size() + 1);
  s.client_port = PickFreePort();
  do {
    s.peer_port = PickFreePort();
  } while (s.peer_port == s.client_port);
  s.data_dir = TempDir(absl::StrCat(tag_, "-", s.name));
  s.client_scheme = client_scheme_;
  s.peer_scheme = peer_scheme_;
  specs_.push_back(s);
  procs_.push_back(std::make_unique<Subprocess>());
  return static_cast<int>(specs_.size()) - 1;
}

absl::StatusOr<CommandResult> RunEtcdctl(const std::string& endpoints,
                                         const std::vector<std::string>& args,
                                         const std::string& stdin_text) {
  std::vector<std::string> argv = {"etcdctl", "--endpoints=" + endpoints,
                                   "--dial-timeout=5s",
                                   "--command-timeout=15s"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, absl::Seconds(30), {"ETCDCTL_API=3"}, stdin_text);
}

CommandResult Etcdctl(const std::string& endpoints,
                      const std::vector<std::string>& args,
                      const std::string& stdin_text) {
  absl::StatusOr<CommandResult> r = RunEtcdctl(endpoints, args, stdin_text);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : CommandResult{};
}

CommandResult Lockctl(const std::string& endpoints,
                      const std::vector<std::string>& args,
                      const std::string& stdin_text) {
  std::vector<std::string> argv = {Runfile("lockd/lockctl"),
                                   "--endpoints=" + endpoints};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<CommandResult> r =
      RunCommand(argv, absl::Seconds(30), {}, stdin_text);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : CommandResult{};
}

std::string LocalCluster::initial_cluster() const {
  return absl::StrJoin(specs_, ",", [](std::string* out, const MemberSpec& s) {
    absl::StrAppend(out, s.name, "=", s.peer_url());
  });
}

std::string LocalCluster::endpoints() const {
  return absl::StrJoin(specs_, ",", [](std::string* out, const MemberSpec& s) {
    out->append(s.endpoint());
  });
}

std::vector<std::string> LocalCluster::MemberArgs(int i) const {
  const MemberSpec& s = specs_[i];
  return {
      binary_.empty() ? Runfile("lockd/lockd") : binary_,
      "--name=" + s.name,
      "--data-dir=" + s.data_dir,
      "--listen-client-urls=" + s.client_url(),
      "--advertise-client-urls=" + s.client_url(),
      "--listen-peer-urls=" + s.peer_url(),
      "--initial-advertise-peer-urls=" + s.peer_url(),
      "--initial-cluster=" + initial_cluster(),
      "--initial-cluster-token=test-cluster",
  };
}

absl::Status LocalCluster::StartMember(
    int i, const std::vector<std::string>& extra_flags,
    absl::Duration timeout) {
  std::vector<std::string> args = MemberArgs(i);
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  procs_[i] = std::make_unique<Subprocess>();
  const char* outputs = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  std::string log =
      outputs ? absl::StrCat(outputs, "/", tag_, "-", specs_[i].name, ".log")
              : "";
  if (absl::Status s = procs_[i]->Start(args, {}, log); !s.ok()) return s;
  // lockd: serving, not yet "ready": a member of a new cluster publishes
  // itself (and then says it is ready) only once a quorum runs, and tests
  // start members one by one. etcd serves only once ready.
  const char* serving = binary_.empty() ? "serving client requests on"
                                        : "ready to serve client requests";
  if (!procs_[i]->WaitForOutput(serving, timeout)) {
    return absl::UnavailableError(absl::StrCat("member ", specs_[i].name,
                                               " did not become ready:\n",
                                               procs_[i]->output()));
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::StartAll() {
  // Ports are picked free, but a test running beside this one may take one
  // before the member binds it. Before any member has run, new ports (and
  // fresh data directories) are still possible: try again with them.
  absl::Status s;
  for (int attempt = 0; attempt < 3; ++attempt) {
    s = absl::OkStatus();
    for (int i = 0; i < size() && s.ok(); ++i) s = StartMember(i);
    if (s.ok() || !(absl::StrContains(s.message(), "Address already in use") ||
                    absl::StrContains(s.message(), "cannot listen"))) {
      return s;
    }
    for (int i = 0; i < size(); ++i) {
      if (procs_[i]->running()) procs_[i]->Stop();
      MemberSpec& spec = specs_[i];
      spec.client_port = PickFreePort();
      do {
        spec.peer_port = PickFreePort();
      } while (spec.peer_port == spec.client_port);
      spec.data_dir = TempDir(absl::StrCat(tag_, "-", spec.name));
    }
  }
  return s;
}

int LocalCluster::StopMember(int i) { return procs_[i]->Stop(); }

namespace {

bool MemberStatus(const MemberSpec& m,
                  const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                  etcdserverpb::StatusResponse* resp) {
  auto channel = grpc::CreateChannel(m.endpoint(), credentials);
  auto stub = etcdserverpb::Maintenance::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return stub->Status(&ctx, etcdserverpb::StatusRequest(), resp).ok();
}

}  // namespace

uint64_t LocalCluster::WaitForLeader(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    for (int i = 0; i < size(); ++i) {
      if (!procs_[i]->running()) continue;
      etcdserverpb::StatusResponse resp;
      if (MemberStatus(specs_[i], Credentials(), &resp) && resp.leader() != 0) {
        return resp.leader();
      }
    }
    // An election takes an election timeout or two; poll gently.
    absl::SleepFor(absl::Milliseconds(50));
  }
  return 0;
}

bool LocalCluster::WaitForPublished(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    bool all = true;
    for (int i = 0; i < size() && all; ++i) {
      if (!procs_[i]->running()) continue;
      auto stub = etcdserverpb::Cluster::NewStub(
          grpc::CreateChannel(specs_[i].endpoint(), Credentials()));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(2));
      etcdserverpb::MemberListResponse resp;
      all = stub->MemberList(&ctx, etcdserverpb::MemberListRequest(), &resp)
                .ok() &&
            resp.members_size() == size();
      for (const etcdserverpb::Member& m : resp.members()) {
        all = all && !m.name().empty() && m.clienturls_size() > 0;
      }
    }
    if (all) return true;
    // Publishing waits for a leader: an election timeout or two.
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

int LocalCluster::MemberIndexOf(uint64_t member_id) {
  for (int i = 0; i < size(); ++i) {
    if (!procs_[i]->running()) continue;
    etcdserverpb::StatusResponse resp;
    if (MemberStatus(specs_[i], Credentials(), &resp) &&
        resp.header().member_id() == member_id) {
      return i;
    }
  }
  return -1;
}

}  // namespace lockd::testing
