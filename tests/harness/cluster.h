// Real lockd members on loopback, for multi-process tests.
#ifndef LOCKD_TESTS_HARNESS_CLUSTER_H_
#define LOCKD_TESTS_HARNESS_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/harness/process.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace lockd::testing {

struct MemberSpec {
  std::string name;
  int client_port = 0;
  int peer_port = 0;
  std::string data_dir;
  // "http" or "https" (see LocalCluster::set_schemes).
  std::string client_scheme = "http";
  std::string peer_scheme = "http";

  std::string client_url() const;
  std::string peer_url() const;
  std::string endpoint() const;  // "127.0.0.1:port", as etcdctl takes it
  // client_url() for https members (etcdctl needs the scheme there).
  std::string scheme_endpoint() const;
};

// N members with fresh ports and data directories under TEST_TMPDIR.
class LocalCluster {
 public:
  // `tag` keeps data directories of several clusters in one test apart.
  LocalCluster(int size, const std::string& tag);
  ~LocalCluster();

  // The URL schemes of every member's client and peer URLs (default
  // "http"), for members started from now on; https members also need
  // their TLS flags in StartMember's `extra_flags`.
  void set_schemes(const std::string& client, const std::string& peer);
  // How the harness's own calls (WaitForLeader, WaitForPublished,
  // MemberIndexOf) reach the client ports; default insecure.
  void set_client_credentials(
      std::shared_ptr<grpc::ChannelCredentials> credentials) {
    credentials_ = std::move(credentials);
  }

  // Starts member i with the cluster's --initial-cluster plus `extra_flags`,
  // and waits until it serves clients. The binary is lockd from runfiles.
  absl::Status StartMember(int i,
                           const std::vector<std::string>& extra_flags = {},
                           absl::Duration timeout = absl::Seconds(30));
  absl::Status StartAll();
  // Adds a member spec (fresh ports and data directory) for a member to be
  // added to the running cluster; returns its index. initial_cluster() now
  // includes it, as a joining member's --initial-cluster must. Start it
  // with StartMember(i, {"--initial-cluster-state=existing"}) after
  // `member add`.
  int AddSpec();
  // SIGTERM and wait; returns the exit code.
  int StopMember(int i);

  // Asks the running members for their leader until one names it; 0 if
  // none does within `timeout`.
  uint64_t WaitForLeader(absl::Duration timeout);
  // Waits until every running member lists all size() members with their
  // names and client URLs (each member publishes them through the leader
  // after it starts, as etcd members do); false at the timeout.
  bool WaitForPublished(absl::Duration timeout);
  // Index of the member with this ID, or -1 (asks the running members).
  int MemberIndexOf(uint64_t member_id);

  std::vector<std::string> MemberArgs(int i) const;
  // The member binary: lockd from runfiles unless set (e.g. /usr/bin/etcd,
  // which takes the same flags, to run the same scenario against etcd).
  void set_binary(const std::string& path) { binary_ = path; }
  const MemberSpec& member(int i) const { return specs_[i]; }
  Subprocess& process(int i) { return *procs_[i]; }
  int size() const { return static_cast<int>(specs_.size()); }
  std::string initial_cluster() const;
  std::string endpoints() const;  // all members, comma-separated

 private:
  std::shared_ptr<grpc::ChannelCredentials> Credentials() const;

  std::string tag_;
  std::string binary_;
  std::string client_scheme_ = "http";
  std::string peer_scheme_ = "http";
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::vector<MemberSpec> specs_;
  std::vector<std::unique_ptr<Subprocess>> procs_;
};

// Runs Debian's etcdctl (API v3) against `endpoints` with short dial and
// command timeouts.
absl::StatusOr<CommandResult> RunEtcdctl(const std::string& endpoints,
                                         const std::vector<std::string>& args,
                                         const std::string& stdin_text = "");
// RunEtcdctl for test bodies: an etcdctl that cannot be run at all fails
// the test (and an empty result comes back); its exit code and output are
// the caller's to check.
CommandResult Etcdctl(const std::string& endpoints,
                      const std::vector<std::string>& args,
                      const std::string& stdin_text = "");

// lockd's lockctl (from the test's runfiles: list //lockd:lockctl in its
// data) against `endpoints`, as Etcdctl above: a lockctl that cannot be run
// fails the test.
CommandResult Lockctl(const std::string& endpoints,
                      const std::vector<std::string>& args,
                      const std::string& stdin_text = "");

}  // namespace lockd::testing

#endif  // LOCKD_TESTS_HARNESS_CLUSTER_H_
