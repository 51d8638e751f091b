// A member's static configuration: etcd's flag names and defaults, parsed and
// validated before anything touches the network or the disk.
#ifndef LOCKD_SERVER_CONFIG_H_
#define LOCKD_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lockd {

// A URL as etcd's flags take them: scheme://host:port, nothing else.
struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // an IP literal (no brackets) or a host name
  uint16_t port = 0;   // 0 only in listen URLs: the OS picks one

  // "http://127.0.0.1:2379"; IPv6 hosts are bracketed.
  std::string ToString() const;
  // "127.0.0.1:2379", the form gRPC's ServerBuilder and channels take.
  std::string HostPort() const;
  bool https() const { return scheme == "https"; }
  bool operator==(const Url& o) const {
    return scheme == o.scheme && host == o.host && port == o.port;
  }
};

// Parses one URL. Errors: kInvalidArgument naming the URL and what is wrong.
absl::StatusOr<Url> ParseUrl(const std::string& text);
// Parses a comma-separated, non-empty list of URLs.
absl::StatusOr<std::vector<Url>> ParseUrls(const std::string& text);

struct MemberConfig {
  std::string name;
  std::vector<Url> peer_urls;  // sorted by string form, as IDs hash them
  uint64_t id = 0;             // derived: see ComputeMemberId
};

// Automatic compaction of the key-value history (etcd's --auto-compaction-*
// flags): keep `period` of history (periodic mode) or `revisions`
// revisions (revision mode). Off when both are zero.
struct AutoCompaction {
  absl::Duration period = absl::ZeroDuration();
  int64_t revisions = 0;
  bool enabled() const {
    return period > absl::ZeroDuration() || revisions > 0;
  }
};

// etcd's reading of the two flags: mode "periodic" takes a duration ("30m",
// "1h30m") or a bare number of hours ("1"); mode "revision" a number of
// revisions; "0" turns compaction off. Errors: kInvalidArgument.
absl::StatusOr<AutoCompaction> ParseAutoCompaction(
    const std::string& mode, const std::string& retention);

// One side's TLS flags (etcd's --cert-file, --key-file, --trusted-ca-file,
// --client-cert-auth, or their --peer-* twins): file paths, read at start
// (lockd/server/tls.h).
struct TlsFlags {
  std::string cert_file;
  std::string key_file;
  std::string trusted_ca_file;
  // Require and verify the other side's certificate against
  // trusted_ca_file.
  bool client_cert_auth = false;
};

struct ServerConfig {
  // Raw flag values, with etcd's defaults.
  std::string name = "default";
  std::string data_dir;  // default: "<name>.lockd"
  std::string listen_client_urls = "http://localhost:2379";
  std::string advertise_client_urls = "http://localhost:2379";
  std::string listen_peer_urls = "http://localhost:2380";
  std::string initial_advertise_peer_urls = "http://localhost:2380";
  std::string initial_cluster;  // default: "<name>=<initial advertise peers>"
  // Extra URLs serving only GET /metrics and /health over HTTP (etcd's
  // --listen-metrics-urls, for probes and scrapers); empty: none.
  std::string listen_metrics_urls;
  std::string initial_cluster_state = "new";
  std::string initial_cluster_token = "etcd-cluster";
  uint64_t heartbeat_interval_ms = 100;
  uint64_t election_timeout_ms = 1000;
  uint64_t max_request_bytes = 1536 * 1024;
  uint64_t max_txn_ops = 128;
  int64_t quota_backend_bytes = 0;  // 0: the default quota
  // The quota in effect: --quota-backend-bytes, or etcd's default, 2 GiB.
  uint64_t QuotaBytes() const {
    return quota_backend_bytes > 0 ? static_cast<uint64_t>(quota_backend_bytes)
                                   : uint64_t{2} << 30;
  }
  uint64_t snapshot_count = 100000;  // 0: the default, as in etcd
  uint64_t snapshot_catchup_entries = 5000;
  std::string auto_compaction_mode = "periodic";
  std::string auto_compaction_retention = "0";
  // etcd's --experimental-initial-corrupt-check and
  // --experimental-corrupt-check-time (0: off); see corrupt_check.h.
  bool initial_corrupt_check = false;
  absl::Duration corrupt_check_time = absl::ZeroDuration();
  bool strict_reconfig_check = true;
  bool pre_vote = true;
  // How long a removed member keeps relaying its clients' calls to the
  // current members before it exits; zero exits at once.
  absl::Duration removed_member_grace = absl::Minutes(10);
  // With --initial-cluster-state=existing: how long a new member keeps
  // asking the cluster until its peer URLs appear in the member list (so it
  // may be started before `member add`); zero fails at once.
  absl::Duration join_timeout = absl::Minutes(5);
  // TLS for https:// client URLs (--cert-file, ...), and for the peer port
  // and every connection to a peer when the peer URLs are https://
  // (--peer-cert-file, ...).
  TlsFlags client_tls;
  TlsFlags peer_tls;

  // Derived by Validate().
  std::vector<Url> listen_client;
  std::vector<Url> advertise_client;
  std::vector<Url> listen_peer;
  std::vector<Url> listen_metrics;
  std::vector<Url> advertise_peer;
  std::vector<MemberConfig> members;  // sorted by id
  uint64_t member_id = 0;
  uint64_t cluster_id = 0;
  AutoCompaction auto_compaction;
  // Some --listen-client-urls are https (served by gRPC alone, over TLS).
  bool client_https = false;
  // The peer URLs (all of one scheme) are https: the peer port serves TLS
  // and this member dials every peer over TLS.
  bool peer_https = false;
};

// Fills the derived fields and checks the flags against each other, with
// etcd's wording where etcd has one. `listen_client_set` says whether
// --listen-client-urls was given explicitly (then --advertise-client-urls must
// be too). TLS: an https client URL needs --cert-file and --key-file, https
// peer URLs need --peer-cert-file and --peer-key-file, and
// --[peer-]client-cert-auth needs --[peer-]trusted-ca-file; every peer URL
// (listen, advertise, --initial-cluster) has one scheme. The files are
// read later, at start. Errors: kInvalidArgument.
absl::Status ValidateConfig(ServerConfig& config, bool listen_client_set,
                            bool advertise_client_set);

// etcd's derivations, so a member configured like an etcd member gets the
// same IDs: the first 8 bytes (big-endian) of SHA-1 over the sorted peer URLs
// followed by the cluster token; the cluster ID hashes the sorted member IDs.
uint64_t ComputeMemberId(const std::vector<Url>& peer_urls,
                         const std::string& cluster_token);
uint64_t ComputeClusterId(std::vector<uint64_t> member_ids);

// On first start, writes the member's identity (IDs and the bootstrap
// membership) to <dir>/identity atomically; on later starts, replaces the
// identity fields of `config` with the stored ones, so changed
// --initial-cluster* flags cannot change who a member is. Sets
// `*restarted`. Errors: kFailedPrecondition when the stored identity names
// another member (--name differs) or is unreadable; kInternal for I/O.
absl::Status LoadOrStoreIdentity(const std::string& dir, ServerConfig& config,
                                 bool* restarted);

// Creates the data directory (mode 0700) if needed and checks that it is a
// writable directory. Errors: kFailedPrecondition, "cannot access data
// directory: ...".
absl::Status PrepareDataDir(const std::string& dir);

}  // namespace lockd

#endif  // LOCKD_SERVER_CONFIG_H_
