// lockd: a member of a lockd cluster. Flags follow etcd's; see --help.
#include <signal.h>

#include <cstdio>
#include <string>

#include "absl/synchronization/mutex.h"
#include "lockd/server/config.h"
#include "lockd/server/server.h"
#include "lockd/util/flags.h"
#include "lockd/util/log.h"
#include "lockd/version.h"

namespace lockd {
namespace {

constexpr char kUsage[] = R"(usage: lockd [flags]
  Start a lockd member: a Raft-replicated lock service and key-value store
  that speaks the etcd v3 API.

  lockd --version
  lockd -h | --help

Every flag can also come from the environment as LOCKD_<FLAG>, e.g.
LOCKD_DATA_DIR for --data-dir; the command line wins.

flags:
)";

int Main(int argc, char** argv) {
#ifdef NDEBUG
  // Debian's abseil checks every Mutex acquisition against a global lock
  // graph (deadlock detection); that bookkeeping showed up as a hot spot on
  // the write path. Optimized builds skip it; test builds keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  ServerConfig config;
  bool print_version = false;
  std::string log_level = "info";

  FlagSet fs("lockd", "LOCKD");
  fs.String("name", &config.name, "Human-readable name for this member.");
  fs.String("data-dir", &config.data_dir,
            "Path to the data directory (default \"<name>.lockd\").");
  fs.String("listen-client-urls", &config.listen_client_urls,
            "List of URLs to listen on for client traffic.");
  fs.String("advertise-client-urls", &config.advertise_client_urls,
            "List of this member's client URLs to advertise to the rest of "
            "the cluster.");
  fs.String("listen-peer-urls", &config.listen_peer_urls,
            "List of URLs to listen on for peer traffic.");
  fs.String("listen-metrics-urls", &config.listen_metrics_urls,
            "List of URLs to listen on for the /metrics and /health "
            "endpoints.");
  fs.String("initial-advertise-peer-urls", &config.initial_advertise_peer_urls,
            "List of this member's peer URLs to advertise to the rest of the "
            "cluster.");
  fs.String(
      "initial-cluster", &config.initial_cluster,
      "Initial cluster configuration for bootstrapping, as "
      "name=peerURL,... (default \"<name>=<initial-advertise-peer-urls>\").");
  fs.String("initial-cluster-state", &config.initial_cluster_state,
            "Initial cluster state ('new' or 'existing').");
  fs.String("initial-cluster-token", &config.initial_cluster_token,
            "Initial cluster token for the cluster during bootstrap.");
  fs.Uint64("heartbeat-interval", &config.heartbeat_interval_ms,
            "Time (in milliseconds) of a heartbeat interval.");
  fs.Uint64("election-timeout", &config.election_timeout_ms,
            "Time (in milliseconds) for an election to timeout.");
  fs.Uint64("max-request-bytes", &config.max_request_bytes,
            "Maximum client request size in bytes the server will accept.");
  fs.Uint64("max-txn-ops", &config.max_txn_ops,
            "Maximum number of operations permitted in a transaction.");
  fs.Int64("quota-backend-bytes", &config.quota_backend_bytes,
           "Raise alarms when backend size exceeds the given quota (0 means "
           "the default quota).");
  fs.Uint64("snapshot-count", &config.snapshot_count,
            "Number of committed transactions to trigger a snapshot to disk "
            "(the raft log is compacted behind it; 0 means the default).");
  fs.Uint64("experimental-snapshot-catchup-entries",
            &config.snapshot_catchup_entries,
            "Number of entries kept in the raft log after a snapshot, for "
            "slow followers to catch up from.");
  fs.String("auto-compaction-mode", &config.auto_compaction_mode,
            "How to read --auto-compaction-retention: 'periodic' (a "
            "duration, hours if no unit is given, e.g. '5m') or 'revision' "
            "(a number of revisions).");
  fs.String("auto-compaction-retention", &config.auto_compaction_retention,
            "Auto compaction retention of the key-value history (the leader "
            "compacts it as it ages); 0 means disable auto compaction.");
  fs.Bool("experimental-initial-corrupt-check", &config.initial_corrupt_check,
          "Before serving, compare this member's data (HashKV) with its "
          "peers' and refuse to start if it differs.");
  fs.Duration("experimental-corrupt-check-time", &config.corrupt_check_time,
              "How often the leader compares its data with the followers' "
              "(a mismatch raises the CORRUPT alarm, which stops writes); 0 "
              "turns it off.");
  fs.Bool("strict-reconfig-check", &config.strict_reconfig_check,
          "Reject reconfiguration requests that would cause quorum loss.");
  fs.Bool("pre-vote", &config.pre_vote,
          "Run a pre-vote phase before elections, so a rejoining member "
          "does not disrupt the cluster.");
  fs.Duration("removed-member-grace", &config.removed_member_grace,
              "After this member is removed from the cluster, how long its "
              "client listener keeps relaying calls to the current members "
              "(so clients with a static endpoint list keep working) before "
              "it exits; 0 exits at once.");
  fs.Duration("join-timeout", &config.join_timeout,
              "With --initial-cluster-state=existing, how long to wait for "
              "this member to be added to the cluster (`lockctl member add`) "
              "and for a member to answer; 0 fails at once.");
  fs.String("cert-file", &config.client_tls.cert_file,
            "Path to the client server TLS cert file (for https client "
            "URLs).");
  fs.String("key-file", &config.client_tls.key_file,
            "Path to the client server TLS key file.");
  fs.String("trusted-ca-file", &config.client_tls.trusted_ca_file,
            "Path to the client server TLS trusted CA cert file (verifies "
            "client certificates).");
  fs.Bool("client-cert-auth", &config.client_tls.client_cert_auth,
          "Enable client cert authentication: https clients must present a "
          "certificate signed by --trusted-ca-file.");
  fs.String("peer-cert-file", &config.peer_tls.cert_file,
            "Path to the peer server TLS cert file (for https peer URLs; "
            "also the client certificate this member presents to peers).");
  fs.String("peer-key-file", &config.peer_tls.key_file,
            "Path to the peer server TLS key file.");
  fs.String("peer-trusted-ca-file", &config.peer_tls.trusted_ca_file,
            "Path to the peer server TLS trusted CA file (verifies peers).");
  fs.Bool("peer-client-cert-auth", &config.peer_tls.client_cert_auth,
          "Enable peer client cert authentication: peers must present a "
          "certificate signed by --peer-trusted-ca-file.");
  fs.String("log-level", &log_level, "Log level: debug, info, warn or error.");
  fs.Bool("version", &print_version, "Print the version and exit.");

  if (absl::Status s = fs.Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "%s\n%s%s", std::string(s.message()).c_str(), kUsage,
                 fs.Usage().c_str());
    return 2;
  }
  if (fs.help_requested()) {
    std::printf("%s%s", kUsage, fs.Usage().c_str());
    return 0;
  }
  if (!fs.args().empty()) {
    std::fprintf(stderr,
                 "error verifying flags, '%s' is not a valid flag. See "
                 "'lockd --help'.\n",
                 fs.args()[0].c_str());
    return 1;
  }
  if (print_version) {
    std::printf("lockd Version: %s\netcd API Version: %s\n", kLockdVersion,
                kEtcdApiMajorMinor);
    return 0;
  }
  LogLevel level;
  if (!ParseLogLevel(log_level, &level)) {
    std::fprintf(stderr,
                 "error verifying flags, --log-level must be debug, info, warn "
                 "or error, not \"%s\". See 'lockd --help'.\n",
                 log_level.c_str());
    return 1;
  }
  SetLogLevel(level);

  if (absl::Status s = ValidateConfig(config, fs.IsSet("listen-client-urls"),
                                      fs.IsSet("advertise-client-urls"));
      !s.ok()) {
    std::fprintf(stderr, "error verifying flags, %s. See 'lockd --help'.\n",
                 std::string(s.message()).c_str());
    return 1;
  }

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Logf(LogLevel::kInfo, "lockd", "lockd %s (etcd API %s) starting",
       kLockdVersion, kEtcdApiVersion);
  Server server(config);
  if (absl::Status s = server.Start(); !s.ok()) {
    Logf(LogLevel::kError, "lockd", "%s", std::string(s.message()));
    return 1;
  }
  // The IDs are known only now: a restarted member reads them from its data
  // directory, a joining one learns them from the cluster.
  Logf(LogLevel::kInfo, "lockd",
       "name=%s data-dir=%s member-id=%016x cluster-id=%016x",
       server.config().name, server.config().data_dir,
       server.config().member_id, server.config().cluster_id);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  Logf(LogLevel::kInfo, "lockd", "received %s, shutting down",
       sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.Shutdown(absl::Seconds(5));
  Logf(LogLevel::kInfo, "lockd", "stopped");
  return 0;
}

}  // namespace
}  // namespace lockd

int main(int argc, char** argv) { return lockd::Main(argc, argv); }
