// lockd: a member of a lockd cluster. Flags follow etcd's; see --help.
#include <signal.h>

#include <cstdio>
#include <string>

#include "absl/synchronization/mutex.h"
#include "lockd/server/config.h"
#include "lockd/server/grpc_log.h"
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
  fs.String("name", &config.name,
            "This member's name in --initial-cluster and the member list.");
  fs.String("data-dir", &config.data_dir,
            "Path to the data directory (default \"<name>.lockd\").");
  fs.String("listen-client-urls", &config.listen_client_urls,
            "Comma-separated URLs where clients connect (gRPC; http ones "
            "also serve the JSON gateway, /health and /metrics).");
  fs.String("advertise-client-urls", &config.advertise_client_urls,
            "Comma-separated client URLs other members and clients are told "
            "to use for this member.");
  fs.String("listen-peer-urls", &config.listen_peer_urls,
            "Comma-separated URLs where the other members connect.");
  fs.String("listen-metrics-urls", &config.listen_metrics_urls,
            "Comma-separated http URLs serving only /metrics and /health.");
  fs.String("initial-advertise-peer-urls", &config.initial_advertise_peer_urls,
            "Comma-separated peer URLs the other members are told to use for "
            "this member.");
  fs.String("initial-cluster", &config.initial_cluster,
            "The members a new cluster starts with, as name=peerURL,... "
            "(default \"<name>=<initial-advertise-peer-urls>\").");
  fs.String("initial-cluster-state", &config.initial_cluster_state,
            "'new' to start a new cluster, 'existing' to join a running "
            "one.");
  fs.String("initial-cluster-token", &config.initial_cluster_token,
            "A name that keeps clusters started from the same "
            "--initial-cluster apart (part of the cluster ID).");
  fs.Uint64("heartbeat-interval", &config.heartbeat_interval_ms,
            "Milliseconds between the leader's heartbeats.");
  fs.Uint64("election-timeout", &config.election_timeout_ms,
            "Milliseconds a follower waits without hearing from a leader "
            "before it starts an election.");
  fs.Uint64("max-request-bytes", &config.max_request_bytes,
            "Largest client request accepted, in bytes.");
  fs.Uint64("max-txn-ops", &config.max_txn_ops,
            "Most operations one transaction may hold.");
  fs.Int64("quota-backend-bytes", &config.quota_backend_bytes,
           "Store size in bytes past which the NOSPACE alarm is raised and "
           "writes refused (0: 2 GiB).");
  fs.Uint64("snapshot-count", &config.snapshot_count,
            "Applied entries between raft log compactions (the log is cut "
            "behind a snapshot of the store; 0 means the default).");
  fs.Uint64("experimental-snapshot-catchup-entries",
            &config.snapshot_catchup_entries,
            "Number of entries kept in the raft log after a snapshot, for "
            "slow followers to catch up from.");
  fs.String("auto-compaction-mode", &config.auto_compaction_mode,
            "How to read --auto-compaction-retention: 'periodic' (a "
            "duration, hours if no unit is given, e.g. '5m') or 'revision' "
            "(a number of revisions).");
  fs.String("auto-compaction-retention", &config.auto_compaction_retention,
            "How much key-value history the leader keeps as it compacts the "
            "rest (see --auto-compaction-mode); 0 turns it off.");
  fs.Bool("experimental-initial-corrupt-check", &config.initial_corrupt_check,
          "Before serving, compare this member's data (HashKV) with its "
          "peers' and refuse to start if it differs.");
  fs.Duration("experimental-corrupt-check-time", &config.corrupt_check_time,
              "How often the leader compares its data with the followers' "
              "(a mismatch raises the CORRUPT alarm, which stops writes); 0 "
              "turns it off.");
  fs.Bool("strict-reconfig-check", &config.strict_reconfig_check,
          "Refuse membership changes that would leave the cluster without "
          "a quorum of started members.");
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
            "Certificate (PEM) this member shows on its https client URLs.");
  fs.String("key-file", &config.client_tls.key_file,
            "Private key (PEM) of --cert-file.");
  fs.String("trusted-ca-file", &config.client_tls.trusted_ca_file,
            "CA certificates (PEM) that clients' certificates must chain "
            "to.");
  fs.Bool("client-cert-auth", &config.client_tls.client_cert_auth,
          "Admit only https clients whose certificate chains to "
          "--trusted-ca-file.");
  fs.String("peer-cert-file", &config.peer_tls.cert_file,
            "Certificate (PEM) this member shows to other members, on its "
            "https peer URLs and when it connects to theirs.");
  fs.String("peer-key-file", &config.peer_tls.key_file,
            "Private key (PEM) of --peer-cert-file.");
  fs.String("peer-trusted-ca-file", &config.peer_tls.trusted_ca_file,
            "CA certificates (PEM) that other members' certificates must "
            "chain to.");
  fs.Bool("peer-client-cert-auth", &config.peer_tls.client_cert_auth,
          "Admit only members whose certificate chains to "
          "--peer-trusted-ca-file on the peer URLs.");
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
  RouteGrpcLogs();

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
