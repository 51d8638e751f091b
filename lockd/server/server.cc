#include "lockd/server/server.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_posix.h>
#include <netdb.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lockd/server/grpc_metrics.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"
#include "lockd/util/thread_name.h"
#include "lockd/version.h"

namespace lockd {
namespace {

// gRPC framing on top of a request's own bytes, as etcd allows for.
constexpr int kGrpcOverheadBytes = 512 * 1024;

// gRPC reports a failed bind only as a null server; probing first lets the
// error name the cause ("Address already in use").
absl::Status ProbeBind(const Url& url) {
  if (url.port == 0) return absl::OkStatus();
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  struct addrinfo* res = nullptr;
  std::string port = absl::StrCat(url.port);
  if (int rc = getaddrinfo(url.host.c_str(), port.c_str(), &hints, &res);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("listen tcp ", url.HostPort(), ": ", gai_strerror(rc)));
  }
  absl::Status status = absl::OkStatus();
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EAFNOSUPPORT &&
        errno != EADDRNOTAVAIL) {
      status = absl::UnavailableError(absl::StrCat(
          "listen tcp ", url.HostPort(), ": bind: ", std::strerror(errno),
          ": stop the process using it or choose another port"));
    }
    close(fd);
    if (!status.ok()) break;
  }
  freeaddrinfo(res);
  return status;
}

constexpr int kIdleServerThreadsMax = 512;

// A call made in-process (to this member's own services) as absl's status.
absl::Status FromGrpc(const grpc::Status& st) {
  if (st.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                      st.error_message());
}

// How long a removed member still gets raft traffic (see UpdatePeers).
constexpr absl::Duration kRemovedPeerGrace = absl::Seconds(30);

void ConfigureBuilder(grpc::ServerBuilder& builder,
                      const ServerConfig& config) {
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_request_bytes) +
                                   kGrpcOverheadBytes);
  builder.SetMaxSendMessageSize(INT32_MAX);
  // The sync server runs each call on a thread that blocks until the write
  // commits. With gRPC's default of at most 2 idle polling threads, every
  // finished call's thread exits and the next call spawns a new one; under
  // hundreds of concurrent writes that thread churn cost more CPU than the
  // writes. Keep enough idle threads to cover a burst.
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 4);
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
      kIdleServerThreadsMax);
  // Let clients ping every 5 s (etcd's --grpc-keepalive-min-time) even
  // without calls in flight, so their keepalives detect dead members.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 2 * 60 * 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
}

}  // namespace

Server::Server(ServerConfig config)
    : config_(std::move(config)),
      maintenance_(&config_),
      peer_maintenance_(&config_),
      cluster_(&config_),
      peer_cluster_(&config_) {}

Server::~Server() {
  Shutdown(absl::ZeroDuration());
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::Status Server::OpenStorage() {
  std::string member_dir = config_.data_dir + "/member";
  for (const std::string& dir :
       {member_dir, member_dir + "/raft", member_dir + "/kv"}) {
    if (absl::Status s = PrepareDataDir(dir); !s.ok()) return s;
  }
  bool restarted = false;
  if (config_.initial_cluster_state == "existing" &&
      access((member_dir + "/identity").c_str(), F_OK) != 0) {
    if (absl::Status s = JoinFromPeers(); !s.ok()) return s;
  }
  if (absl::Status s = LoadOrStoreIdentity(member_dir, config_, &restarted);
      !s.ok()) {
    return s;
  }
  if (restarted) {
    Logf(LogLevel::kInfo, "server",
         "restarting member %x of cluster %x from %s; the --initial-cluster "
         "flags are ignored",
         config_.member_id, config_.cluster_id, config_.data_dir);
  }
  kv::StoreOptions store_options;
  raft::DiskStorageOptions log_options;
  SetUpMetrics(&store_options, &log_options);
  absl::StatusOr<std::unique_ptr<kv::MvccStore>> store =
      kv::MvccStore::Open(member_dir + "/kv", store_options);
  if (!store.ok()) return store.status();
  store_ = *std::move(store);
  absl::StatusOr<std::unique_ptr<raft::DiskStorage>> log =
      raft::DiskStorage::Open(member_dir + "/raft", log_options);
  if (!log.ok()) return log.status();
  log_ = *std::move(log);

  if (absl::Status s = membership_.Load(*store_); !s.ok()) return s;
  state_machine_ = std::make_unique<KvStateMachine>(config_.member_id,
                                                    store_.get(), &membership_);
  state_machine_->set_proposals_failed(
      metrics_.GetCounter("etcd_server_proposals_failed_total",
                          "The total number of failed proposals seen."));
  {
    kv::LessorOptions lopts;
    // etcd's minimum TTL: 1.5 election timeouts in whole ticks, rounded up
    // to seconds.
    const uint64_t election_ticks =
        config_.election_timeout_ms / config_.heartbeat_interval_ms;
    const uint64_t min_ttl_ms =
        (3 * election_ticks / 2) * config_.heartbeat_interval_ms;
    lopts.min_ttl_s = static_cast<int64_t>((min_ttl_ms + 999) / 1000);
    lopts.grace = absl::Milliseconds(config_.election_timeout_ms);
    // Expiry runs on the lessor's default clock, kv::MonotonicNow.
    lopts.granted = metrics_.GetCounter("etcd_debugging_lease_granted_total",
                                        "The total number of granted leases.");
    lopts.revoked = metrics_.GetCounter("etcd_debugging_lease_revoked_total",
                                        "The total number of revoked leases.");
    lopts.renewed =
        metrics_.GetCounter("etcd_debugging_lease_renewed_total",
                            "The number of renewed leases seen by the leader.");
    // 1 s to 3 months, as etcd's.
    lopts.ttl_seconds = metrics_.GetHistogram(
        "etcd_debugging_lease_ttl_total", "Bucketed histogram of lease TTLs.",
        metrics::ExponentialBuckets(1, 2, 24));
    lessor_ = std::make_unique<kv::Lessor>(store_.get(), lopts);
    if (absl::Status s = lessor_->ReloadFromStore(); !s.ok()) return s;
    state_machine_->AttachLessor(lessor_.get());
  }
  locks_ = std::make_unique<lock::LockManager>(store_.get(), lock::Limits{});
  state_machine_->AddCommitListener(
      [this](const std::vector<mvccpb::Event>& events, int64_t revision) {
        locks_->OnCommit(events, revision);
      });
  state_machine_->AddRestoreListener([this] { locks_->OnRestore(); });
  snapshot_io_ =
      std::make_unique<StoreSnapshotIo>(member_dir + "/snap", store_.get());
  state_machine_->SetSnapshotDir(snapshot_io_->dir());
  // What lives in memory beside the store follows an installed snapshot.
  state_machine_->AddRestoreListener([this] {
    absl::Status s = membership_.Load(*store_);
    if (s.ok()) s = lessor_->ReloadFromStore();
    if (!s.ok()) {
      Logf(LogLevel::kError, "server",
           "cannot reload state from the installed snapshot: %s",
           std::string(s.message()));
      std::abort();
    }
    UpdatePeers(membership_.Members());
    // Watchers continue from storage: the events in between were never
    // applied here one by one.
    watch_hub_->OnStoreReplaced();
  });
  // Crash-point injection for tests: die between the two steps of a
  // snapshot install (new store in place, raft log not yet updated).
  if (std::getenv("LOCKD_TESTING_EXIT_AFTER_STORE_RESTORE") != nullptr) {
    state_machine_->AddRestoreListener([] {
      Logf(LogLevel::kWarning, "server",
           "exiting right after the store restore "
           "(LOCKD_TESTING_EXIT_AFTER_STORE_RESTORE)");
      std::_Exit(3);
    });
  }
  watch_hub_ = std::make_unique<kv::WatchHub>(store_.get());
  state_machine_->set_watch_hub(watch_hub_.get());
  raft::TransportOptions topts;
  topts.channel_credentials = tls_.PeerChannelCredentials();
  topts.cluster_id = config_.cluster_id;
  topts.self_id = config_.member_id;
  topts.seed = config_.member_id;
  topts.metrics = &metrics_;
  raft::NodeOptions nopts;
  nopts.leader_changes =
      metrics_.GetCounter("etcd_server_leader_changes_seen_total",
                          "The number of leader changes seen.");
  nopts.slow_applies = metrics_.GetCounter(
      "etcd_server_slow_apply_total",
      "The total number of slow apply requests (likely overloaded from slow "
      "disk).");
  nopts.id = config_.member_id;
  nopts.tick_interval = absl::Milliseconds(config_.heartbeat_interval_ms);
  nopts.heartbeat_tick = 1;
  nopts.election_tick = static_cast<int>(config_.election_timeout_ms /
                                         config_.heartbeat_interval_ms);
  nopts.pre_vote = config_.pre_vote;
  nopts.snapshot_count =
      config_.snapshot_count == 0 ? 100000 : config_.snapshot_count;
  nopts.snapshot_catchup_entries = config_.snapshot_catchup_entries;
  nopts.seed = config_.member_id;
  if (config_.initial_cluster_state == "new") {
    for (const MemberConfig& m : config_.members) {
      nopts.bootstrap_voters.push_back(m.id);
    }
    nopts.bootstrap_contexts = BootstrapContexts(config_);
  } else {
    nopts.join_existing = true;
  }
  // The node is the transport's handler; it exists only after the
  // transport, so a forwarding shim is not needed: create the node with the
  // transport first, then point the transport at it.
  transport_ =
      std::make_unique<raft::Transport>(topts, &relay_, snapshot_io_.get());
  absl::StatusOr<std::unique_ptr<raft::RaftNode>> node = raft::RaftNode::Create(
      nopts, log_.get(), transport_.get(), state_machine_.get());
  if (!node.ok()) return node.status();
  node_ = *std::move(node);
  relay_.Attach(node_.get());
  // Peers come from the applied member table; until this member has applied
  // one (a new member replaying the log), from the static configuration.
  if (membership_.Known()) {
    UpdatePeers(membership_.Members());
  } else {
    for (const MemberConfig& m : config_.members) {
      if (m.id != config_.member_id && !m.peer_urls.empty()) {
        transport_->AddPeer(m.id, m.peer_urls[0].HostPort());
        absl::MutexLock lock(&peers_mu_);
        peers_[m.id] = m.peer_urls[0].HostPort();
      }
    }
  }
  membership_.SetListener(
      [this](const MemberList& members) { UpdatePeers(members); });
  kv_ = std::make_unique<KvService>(
      &config_, node_.get(), store_.get(), state_machine_.get(),
      &compaction_mu_, &membership_, tls_.PeerChannelCredentials());
  peer_kv_ = std::make_unique<KvService>(
      &config_, node_.get(), store_.get(), state_machine_.get(),
      &compaction_mu_, &membership_, tls_.PeerChannelCredentials());
  maintenance_.Attach(node_.get(), store_.get(), kv_.get(), &membership_);
  peer_maintenance_.Attach(node_.get(), store_.get(), peer_kv_.get(),
                           &membership_);
  cluster_.Attach(node_.get(), kv_.get(), &membership_);
  peer_cluster_.Attach(node_.get(), peer_kv_.get(), &membership_);
  peer_service_ = std::make_unique<PeerService>(
      &config_, node_.get(), state_machine_.get(), &peer_cluster_);
  lease_driver_ = std::make_unique<LeaseDriver>(
      &config_, node_.get(), state_machine_.get(), lessor_.get());
  lease_ = std::make_unique<LeaseService>(&config_, node_.get(), store_.get(),
                                          kv_.get(), lessor_.get(),
                                          lease_driver_.get());
  peer_lease_ = std::make_unique<LeaseService>(
      &config_, node_.get(), store_.get(), peer_kv_.get(), lessor_.get(),
      lease_driver_.get());
  watch_ =
      std::make_unique<WatchService>(&config_, node_.get(), watch_hub_.get());
  lock_ = std::make_unique<LockService>(kv_.get(), locks_.get());
  election_ = std::make_unique<ElectionService>(kv_.get(), locks_.get(),
                                                &require_leader_);
  lockd_locks_ = std::make_unique<LockdLocksService>(kv_.get(), locks_.get());
  return absl::OkStatus();
}

void Server::SetUpMetrics(kv::StoreOptions* store_options,
                          raft::DiskStorageOptions* log_options) {
  // etcd's buckets for disk latencies: 1 ms to 8 s.
  const std::vector<double> disk_buckets =
      metrics::ExponentialBuckets(0.001, 2, 14);
  log_options->sync_seconds = metrics_.GetHistogram(
      "etcd_disk_wal_fsync_duration_seconds",
      "The latency distributions of fsync called by WAL.", disk_buckets);
  log_options->write_bytes =
      metrics_.GetGauge("etcd_disk_wal_write_bytes_total",
                        "Total number of bytes written in WAL.");
  store_options->commit_seconds = metrics_.GetHistogram(
      "etcd_disk_backend_commit_duration_seconds",
      "The latency distributions of commit called by backend.", disk_buckets);
  store_options->defrag_seconds = metrics_.GetHistogram(
      "etcd_disk_backend_defrag_duration_seconds",
      "The latency distribution of backend defragmentation.",
      metrics::ExponentialBuckets(0.1, 2, 13));
  store_options->defrag_inflight = metrics_.GetGauge(
      "etcd_disk_defrag_inflight",
      "Whether or not defrag is active on the member. 1 means active, 0 "
      "means not.");
  store_options->puts = metrics_.GetCounter(
      "etcd_mvcc_put_total", "Total number of puts seen by this member.");
  store_options->deletes = metrics_.GetCounter(
      "etcd_mvcc_delete_total", "Total number of deletes seen by this member.");
  store_options->ranges = metrics_.GetCounter(
      "etcd_mvcc_range_total", "Total number of ranges seen by this member.");
  store_options->txns = metrics_.GetCounter(
      "etcd_mvcc_txn_total", "Total number of txns seen by this member.");
  metrics_.AddCollector([this](metrics::Sink& sink) {
    sink.Gauge("etcd_server_quota_backend_bytes",
               "Current backend storage quota size in bytes.", {},
               static_cast<double>(config_.QuotaBytes()));
    if (state_machine_ != nullptr) {
      sink.Gauge("etcd_server_proposals_pending",
                 "The current number of pending proposals to commit.", {},
                 static_cast<double>(state_machine_->PendingProposals()));
    }
    if (watch_hub_ != nullptr) {
      const kv::WatchHub::Counts c = watch_hub_->GetCounts();
      sink.Gauge("etcd_debugging_mvcc_watch_stream_total",
                 "Total number of watch streams.", {},
                 static_cast<double>(c.streams));
      sink.Gauge("etcd_debugging_mvcc_watcher_total",
                 "Total number of watchers.", {},
                 static_cast<double>(c.watchers));
      sink.Gauge("etcd_debugging_mvcc_slow_watcher_total",
                 "Total number of unsynced slow watchers.", {},
                 static_cast<double>(c.unsynced));
    }
    if (store_ != nullptr) {
      // etcd's is -1 until the first compaction.
      const int64_t compacted = store_->compact_revision();
      sink.Gauge("etcd_debugging_mvcc_compact_revision",
                 "The revision of the last compaction in store.", {},
                 static_cast<double>(compacted > 0 ? compacted : -1));
    }
  });
}

absl::Status Server::JoinFromPeers() {
  // An operator (or `lockctl cluster resize`) may start a member before
  // adding it, and a cluster may be between leaders: keep asking with a
  // jittered, bounded backoff until --join-timeout.
  const absl::Time deadline = MonotonicNow() + config_.join_timeout;
  absl::Duration backoff = absl::Milliseconds(100);
  // Each kind of wait is logged once.
  bool said_not_added = false;
  bool said_no_answer = false;
  std::mt19937_64 rng(
      config_.advertise_peer.empty()
          ? 0
          : std::hash<std::string>()(config_.advertise_peer[0].ToString()));
  for (;;) {
    absl::Status s = AskPeersToJoin();
    if (s.ok()) return s;
    if (!absl::IsFailedPrecondition(s) && !absl::IsUnavailable(s)) return s;
    if (MonotonicNow() + backoff >= deadline) {
      if (config_.join_timeout <= absl::ZeroDuration()) return s;
      return absl::Status(
          s.code(),
          absl::StrCat(s.message(), " (gave up after --join-timeout=",
                       absl::FormatDuration(config_.join_timeout), ")"));
    }
    bool& said =
        absl::IsFailedPrecondition(s) ? said_not_added : said_no_answer;
    if (!said) {
      said = true;
      std::vector<std::string> mine;
      for (const Url& u : config_.advertise_peer) mine.push_back(u.ToString());
      const std::string flags =
          absl::StrCat(config_.name, " --peer-urls=", absl::StrJoin(mine, ","));
      const std::string limit = absl::FormatDuration(config_.join_timeout);
      LogLine(LogLevel::kInfo, "server",
              absl::IsFailedPrecondition(s)
                  ? absl::StrCat("waiting to be added: run `lockctl member "
                                 "add ",
                                 flags, "` (waiting up to ", limit,
                                 ", --join-timeout)")
                  : absl::StrCat("waiting for the cluster to answer, to join "
                                 "as ",
                                 flags, " (up to ", limit,
                                 ", --join-timeout): ", s.message()));
    }
    // Start() runs before main() waits for SIGTERM (blocked in every
    // thread): notice a pending one here so a waiting member can be stopped.
    sigset_t pending;
    sigemptyset(&pending);
    if (sigpending(&pending) == 0 && (sigismember(&pending, SIGTERM) == 1 ||
                                      sigismember(&pending, SIGINT) == 1)) {
      return absl::CancelledError("stopped while waiting to join the cluster");
    }
    std::uniform_int_distribution<int64_t> jitter(
        0, absl::ToInt64Milliseconds(backoff) / 2);
    absl::SleepFor(backoff + absl::Milliseconds(jitter(rng)));
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

absl::Status Server::AskPeersToJoin() {
  std::vector<std::string> mine;
  for (const Url& u : config_.advertise_peer) mine.push_back(u.ToString());
  std::sort(mine.begin(), mine.end());
  std::string tried;
  for (const MemberConfig& m : config_.members) {
    if (m.name == config_.name || m.peer_urls.empty()) continue;
    const std::string address = m.peer_urls[0].HostPort();
    auto stub = etcdserverpb::Cluster::NewStub(
        grpc::CreateChannel(address, tls_.PeerChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    etcdserverpb::MemberListRequest req;
    req.set_linearizable(true);
    etcdserverpb::MemberListResponse resp;
    grpc::Status st = stub->MemberList(&ctx, req, &resp);
    if (!st.ok()) {
      absl::StrAppend(&tried, tried.empty() ? "" : "; ", address, ": ",
                      st.error_message());
      continue;
    }
    std::vector<MemberConfig> members;
    uint64_t self = 0;
    for (const etcdserverpb::Member& r : resp.members()) {
      MemberConfig mc;
      mc.id = r.id();
      mc.name = r.name();
      std::vector<std::string> urls(r.peerurls().begin(), r.peerurls().end());
      std::sort(urls.begin(), urls.end());
      for (const std::string& u : urls) {
        absl::StatusOr<Url> url = ParseUrl(u);
        if (url.ok()) mc.peer_urls.push_back(*url);
      }
      if (urls == mine) {
        self = r.id();
        mc.name = config_.name;
      }
      members.push_back(std::move(mc));
    }
    if (self == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this member's peer URLs (", absl::StrJoin(mine, ","),
          ") are not in the cluster's member list (asked ", address,
          "): add it first with `lockctl member add ", config_.name,
          " --peer-urls=", absl::StrJoin(mine, ","), "`"));
    }
    config_.member_id = self;
    config_.cluster_id = resp.header().cluster_id();
    config_.members = std::move(members);
    Logf(LogLevel::kInfo, "server",
         "joining cluster %x as member %x (learned from %s)",
         config_.cluster_id, config_.member_id, address);
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat(
      "cannot join the existing cluster: no member in --initial-cluster "
      "answered (",
      tried,
      "); check that the cluster is running and --initial-cluster lists its "
      "members' peer URLs"));
}

void Server::UpdatePeers(const MemberList& members) {
  std::map<uint64_t, std::string> want;
  for (const etcdserverpb::Member& m : members) {
    if (m.id() == config_.member_id || m.peerurls_size() == 0) continue;
    absl::StatusOr<Url> url = ParseUrl(m.peerurls(0));
    if (url.ok()) want[m.id()] = url->HostPort();
  }
  absl::MutexLock lock(&peers_mu_);
  for (const auto& [id, address] : peers_) {
    if (!want.count(id)) {
      // A voter's removal takes effect in raft only when the joint
      // configuration is left, and the removed member learns that from
      // the leader: keep talking to it for a while.
      Logf(LogLevel::kInfo, "server", "member %x left the cluster", id);
      retiring_peers_[id] = MonotonicNow() + kRemovedPeerGrace;
    }
  }
  for (const auto& [id, address] : want) {
    retiring_peers_.erase(id);
    auto it = peers_.find(id);
    if (it != peers_.end() && it->second == address) continue;
    Logf(LogLevel::kInfo, "server", "peer %x is at %s", id, address);
    transport_->AddPeer(id, address);
  }
  peers_ = std::move(want);
  // A joining member replays the log and sees the table without itself
  // first: only a member that was in the table can have been removed.
  const bool member = membership_.Find(config_.member_id).has_value();
  if (member) was_member_ = true;
  if (was_member_ && !member && !removed_logged_) {
    removed_logged_ = true;
    StartRetire();
  }
}

void Server::StartRetire() {
  absl::MutexLock lock(&stop_mu_);
  if (stopping_ || retirer_.joinable()) return;
  retirer_ = std::thread([this] { Retire(); });
}

void Server::Retire() {
  SetThreadName("retire");
  const absl::Duration grace = config_.removed_member_grace;
  std::vector<Url> targets;
  std::vector<std::string> target_names;
  for (const etcdserverpb::Member& m : membership_.Members()) {
    for (const std::string& u : m.clienturls()) {
      absl::StatusOr<Url> url = ParseUrl(u);
      if (url.ok()) {
        targets.push_back(*url);
        target_names.push_back(url->ToString());
      }
    }
  }
  std::string plan;
  if (grace <= absl::ZeroDuration()) {
    plan = "it exits now (--removed-member-grace=0)";
  } else if (targets.empty()) {
    plan =
        "no current member has published its client URLs to relay to, so "
        "it exits now";
  } else {
    plan = absl::StrCat("for ", absl::FormatDuration(grace),
                        " (--removed-member-grace) its client port relays "
                        "calls to the current members (",
                        absl::StrJoin(target_names, ","), "), then it exits");
  }
  Logf(LogLevel::kWarning, "server",
       "this member (%x) has been removed from the cluster; %s",
       config_.member_id, plan);
  if (grace > absl::ZeroDuration() && !targets.empty()) {
    proxy_ = std::make_unique<RetiredProxy>(
        &config_, targets, tls_.ClientChannelCredentials(),
        [this](const std::string& peer) {
          return client_listener_->PeerOf(peer);
        });
    // The proxy takes over the client ports; calls and streams this member
    // was serving itself end (clients retry, through the proxy).
    auto build = [&]() {
      grpc::ServerBuilder b;
      ConfigureBuilder(b, config_);
      b.RegisterCallbackGenericService(proxy_.get());
      // https client ports: the proxy binds them beside the old server
      // (gRPC listens with SO_REUSEPORT), which then stops.
      for (size_t i = 0; i < config_.listen_client.size(); ++i) {
        const Url& u = config_.listen_client[i];
        if (!u.https()) continue;
        Url bound = u;
        bound.port = static_cast<uint16_t>(client_ports_[i]);
        b.AddListeningPort(bound.HostPort(), tls_.ClientServerCredentials());
      }
      return b.BuildAndStart();
    };
    // Watches this member serves from its own (now frozen) state end with a
    // retryable error; clients re-create them from their last revision.
    watch_->EndAllForGood(grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        "etcdserver: this member was removed from the cluster; watch again "
        "(calls to this endpoint are relayed to the current members)"));
    // The client port's new connections go to the proxy before the old
    // server stops, so no call finds the port closed; calls in flight on the
    // old server (writes it forwarded to the leader) get time to finish.
    std::unique_ptr<grpc::Server> proxy_server = build();
    const bool proxying = proxy_server != nullptr;
    if (proxying) {
      proxy_server->GetHealthCheckService()->SetServingStatus(false);
    }
    std::unique_ptr<grpc::Server> old;
    {
      absl::MutexLock lock(&client_server_mu_);
      old = std::move(client_server_);
      client_server_ = std::move(proxy_server);
    }
    if (old != nullptr) {
      old->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::seconds(10));
      old->Wait();
    }
    if (!proxying) {
      Logf(LogLevel::kError, "server",
           "cannot start the proxy on the client ports; exiting");
    } else {
      absl::MutexLock lock(&stop_mu_);
      AwaitFor(stop_mu_, absl::Condition(&stopping_), grace);
      if (stopping_) return;
    }
    proxy_->Close();
    Logf(LogLevel::kWarning, "server",
         "grace period over after relaying %d calls: answering \"the member "
         "has been permanently removed from the cluster\" and exiting",
         proxy_->relayed());
  }
  {
    // Let clients see the answer before the port closes, as etcd waits a
    // moment before stopping a removed member.
    absl::MutexLock lock(&stop_mu_);
    AwaitFor(stop_mu_, absl::Condition(&stopping_), absl::Seconds(1));
    if (stopping_) return;
  }
  // The main thread waits for SIGTERM and shuts the member down cleanly.
  kill(getpid(), SIGTERM);
}

void Server::RetirePeers() {
  absl::MutexLock lock(&peers_mu_);
  const absl::Time now = MonotonicNow();
  for (auto it = retiring_peers_.begin(); it != retiring_peers_.end();) {
    if (it->second > now) {
      ++it;
      continue;
    }
    transport_->RemovePeer(it->first);
    it = retiring_peers_.erase(it);
  }
}

void Server::PublishLoop() {
  SetThreadName("publish");
  etcdserverpb::Member self;
  self.set_id(config_.member_id);
  self.set_name(config_.name);
  for (const Url& u : config_.advertise_client) {
    self.add_clienturls(u.ToString());
  }
  // Until there is a leader (and this member is in the member list), look
  // again every 50 ms: a member publishes soon after its first election,
  // not at the next step of a backoff that grew while the election ran
  // (which delayed it by up to 1.5 s). Failed attempts back off.
  constexpr absl::Duration kLookAgain = absl::Milliseconds(50);
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    std::optional<etcdserverpb::Member> current =
        membership_.Find(config_.member_id);
    if (current.has_value() && current->name() == self.name() &&
        std::equal(current->clienturls().begin(), current->clienturls().end(),
                   self.clienturls().begin(), self.clienturls().end())) {
      LogReady();
      return;
    }
    absl::Duration wait = kLookAgain;
    if (current.has_value() && node_->leader() != 0) {
      grpc::ServerContext ctx;
      etcdserverpb::MemberListResponse resp;
      grpc::Status st = cluster_.Publish(&ctx, &self, &resp);
      if (st.ok()) {
        Logf(LogLevel::kInfo, "server",
             "published name %s and client URLs to the cluster", self.name());
        LogReady();
        return;
      }
      Logf(LogLevel::kDebug, "server", "publishing attributes: %s",
           st.error_message());
      wait = backoff;
      backoff = std::min(backoff * 2, absl::Seconds(5));
    }
    absl::MutexLock lock(&stop_mu_);
    if (AwaitFor(stop_mu_, absl::Condition(&stopping_), wait)) {
      return;
    }
  }
}

void Server::CompactorStep() {
  RetirePeers();
  // Require-leader: a member without a leader for three election
  // timeouts ends its watch, keep-alive and Observe streams, so no client
  // hangs on a cut-off member; clients resume on another member (watches
  // from their last revision).
  if (node_->LeaderlessFor() >
      3 * absl::Milliseconds(config_.election_timeout_ms)) {
    const grpc::Status no_leader(grpc::StatusCode::UNAVAILABLE,
                                 "etcdserver: no leader");
    const int ended = watch_->EndAll(no_leader);
    const int ended_other =
        lease_->EndKeepAlives(no_leader) +
        peer_lease_->EndKeepAlives(no_leader) +
        require_leader_.EndAll(grpc::StatusCode::UNAVAILABLE,
                               "etcdserver: no leader");
    if (ended + ended_other > 0) {
      Logf(LogLevel::kWarning, "server",
           "no leader for %s: ended %d watch and %d keep-alive/observe "
           "streams with \"no leader\"",
           absl::FormatDuration(node_->LeaderlessFor()), ended, ended_other);
    }
  }
  // Reclaims space after logical compactions, a bounded slice at a time so
  // it never monopolizes the disk.
  absl::MutexLock lock(&compaction_mu_);
  absl::StatusOr<bool> done = store_->CompactSome(1000);
  if (!done.ok()) {
    Logf(LogLevel::kError, "server", "compaction failed: %s",
         std::string(done.status().message()));
  }
}

bool Server::HandOffGrpc(int fd) {
  absl::MutexLock lock(&client_server_mu_);
  if (client_server_ == nullptr) return false;
  grpc::AddInsecureChannelFromFd(client_server_.get(), fd);
  return true;
}

std::unique_ptr<grpc::Server> Server::TakeClientServer() {
  absl::MutexLock lock(&client_server_mu_);
  inproc_channel_.reset();
  inproc_server_ = nullptr;
  return std::move(client_server_);
}

std::shared_ptr<grpc::Channel> Server::GatewayChannel() {
  absl::MutexLock lock(&client_server_mu_);
  if (client_server_ == nullptr) return nullptr;
  if (inproc_server_ != client_server_.get()) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    inproc_channel_ = client_server_->InProcessChannel(args);
    inproc_server_ = client_server_.get();
  }
  return inproc_channel_;
}

CorruptionChecker::Hooks Server::CorruptionCheckHooks() {
  CorruptionChecker::Hooks h;
  h.local_hash = [this] { return store_->HashKV(0); };
  h.peers = [this] {
    std::vector<uint64_t> ids;
    for (const etcdserverpb::Member& m : membership_.Members()) {
      if (m.id() != config_.member_id) ids.push_back(m.id());
    }
    if (ids.empty()) {
      for (const MemberConfig& m : config_.members) {
        if (m.id != config_.member_id) ids.push_back(m.id);
      }
    }
    return ids;
  };
  h.peer_hash =
      [this](uint64_t member,
             int64_t revision) -> absl::StatusOr<etcdserverpb::HashKVResponse> {
    std::shared_ptr<grpc::Channel> channel = kv_->PeerChannel(member);
    if (channel == nullptr) {
      return absl::UnavailableError("no peer URL known for this member");
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    etcdserverpb::HashKVRequest req;
    req.set_revision(revision);
    etcdserverpb::HashKVResponse resp;
    grpc::Status st =
        etcdserverpb::Maintenance::NewStub(channel)->HashKV(&ctx, req, &resp);
    if (!st.ok()) return FromGrpc(st);
    return resp;
  };
  h.read_barrier = [this] {
    etcdserverpb::RangeRequest req;
    req.set_key(std::string(1, '\0'));
    req.set_count_only(true);
    etcdserverpb::RangeResponse resp;
    grpc::ServerContext ctx;
    grpc::Status st = kv_->RangeBlocking(&ctx, &req, &resp);
    return FromGrpc(st);
  };
  h.raise_alarm = [this](uint64_t member) {
    etcdserverpb::AlarmRequest req;
    req.set_action(etcdserverpb::AlarmRequest::ACTIVATE);
    req.set_memberid(member);
    req.set_alarm(etcdserverpb::CORRUPT);
    etcdserverpb::AlarmResponse resp;
    grpc::ServerContext ctx;
    grpc::Status st = kv_->Alarm(&ctx, &req, &resp);
    return FromGrpc(st);
  };
  h.is_leader = [this] { return node_->is_leader(); };
  return h;
}

absl::Status Server::Start() {
  {
    absl::StatusOr<MemberTls> tls = MemberTls::Load(config_);
    if (!tls.ok()) return tls.status();
    tls_ = *std::move(tls);
  }
  if (absl::Status s = PrepareDataDir(config_.data_dir); !s.ok()) return s;
  std::string lock_path = config_.data_dir + "/LOCK";
  lock_fd_ = open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot access data directory: open ", lock_path, ": ",
                     std::strerror(errno)));
  }
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", config_.data_dir,
        " is in use by another lockd process: stop it, or give this member "
        "its own --data-dir"));
  }

  for (const auto* urls : {&config_.listen_client, &config_.listen_peer,
                           &config_.listen_metrics}) {
    for (const Url& url : *urls) {
      if (absl::Status s = ProbeBind(url); !s.ok()) return s;
    }
  }
  if (absl::Status s = OpenStorage(); !s.ok()) return s;
  corruption_checker_ = std::make_unique<CorruptionChecker>(
      config_.member_id, CorruptionCheckHooks());
  if (config_.initial_corrupt_check) {
    // Before any listener: a member whose data differs serves nobody.
    if (absl::Status s = corruption_checker_->InitialCheck(); !s.ok()) {
      return s;
    }
  }

  grpc::EnableDefaultHealthCheckService(true);

  // An http client port is this member's own listener (it tells gRPC from
  // HTTP/1.x and hands gRPC connections to the server); gRPC has no way to
  // take a TLS connection that way, so the server listens on each https
  // client URL itself, and serves only gRPC there.
  grpc::ServerBuilder client_builder;
  ConfigureBuilder(client_builder, config_);
  std::vector<Url> http_client_urls;
  client_ports_.assign(config_.listen_client.size(), 0);
  for (size_t i = 0; i < config_.listen_client.size(); ++i) {
    const Url& u = config_.listen_client[i];
    if (u.https()) {
      client_builder.AddListeningPort(
          u.HostPort(), tls_.ClientServerCredentials(), &client_ports_[i]);
    } else {
      http_client_urls.push_back(u);
    }
  }
  client_builder.RegisterService(&maintenance_);
  client_builder.RegisterService(&cluster_);
  client_builder.RegisterService(kv_.get());
  client_builder.RegisterService(lease_.get());
  client_builder.RegisterService(watch_.get());
  client_builder.RegisterService(lock_.get());
  client_builder.RegisterService(election_.get());
  client_builder.RegisterService(lockd_locks_.get());
  // etcd's gRPC metrics; its services' series exist from the start, at 0,
  // as etcd's do.
  {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(NewGrpcMetricsInterceptorFactory(&metrics_));
    client_builder.experimental().SetInterceptorCreators(
        std::move(interceptors));
    for (const char* service :
         {"etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease",
          "etcdserverpb.Cluster", "etcdserverpb.Auth",
          "etcdserverpb.Maintenance", "grpc.health.v1.Health"}) {
      InitializeGrpcServiceMetrics(&metrics_, service);
    }
  }
  {
    std::unique_ptr<grpc::Server> built = client_builder.BuildAndStart();
    if (built == nullptr) {
      return absl::UnavailableError(
          config_.client_https
              ? "cannot listen on the https --listen-client-urls: check "
                "that the addresses exist on this host and the ports are "
                "free (see the log above)"
              : "cannot start the client gRPC server: see the log above");
    }
    absl::MutexLock lock(&client_server_mu_);
    client_server_ = std::move(built);
  }
  http_gateway_ = std::make_unique<HttpGateway>(
      [this] { return GatewayChannel(); }, config_.max_request_bytes,
      kEtcdApiVersion, absl::StrCat(kEtcdApiMajorMinor, ".0"), &metrics_);
  client_listener_ = std::make_unique<ClientListener>(
      [this](int fd) { return HandOffGrpc(fd); },
      [this](int fd, const std::string& peer) {
        http_gateway_->Serve(fd, peer);
      });
  std::vector<int> http_ports;
  absl::Status listened = absl::OkStatus();
  if (!http_client_urls.empty()) {
    listened = client_listener_->Start(http_client_urls, &http_ports);
  }
  for (size_t i = 0, h = 0; i < config_.listen_client.size(); ++i) {
    if (!config_.listen_client[i].https() && h < http_ports.size()) {
      client_ports_[i] = http_ports[h++];
    }
  }
  if (absl::Status s = listened; !s.ok()) {
    TakeClientServer()->Shutdown();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on --listen-client-urls: ", s.message(),
        " (check that the addresses exist on this host and the ports are "
        "free)"));
  }
  if (!config_.listen_metrics.empty()) {
    // HTTP only: a gRPC connection there is closed.
    metrics_listener_ = std::make_unique<ClientListener>(
        [](int) { return false; },
        [this](int fd, const std::string& peer) {
          http_gateway_->Serve(fd, peer, /*metrics_only=*/true);
        });
    if (absl::Status s =
            metrics_listener_->Start(config_.listen_metrics, &metrics_ports_);
        !s.ok()) {
      client_listener_->Stop();
      TakeClientServer()->Shutdown();
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on --listen-metrics-urls: ", s.message(),
          " (check that the addresses exist on this host and the ports are "
          "free)"));
    }
  }

  grpc::ServerBuilder peer_builder;
  ConfigureBuilder(peer_builder, config_);
  peer_ports_.assign(config_.listen_peer.size(), 0);
  for (size_t i = 0; i < config_.listen_peer.size(); ++i) {
    peer_builder.AddListeningPort(config_.listen_peer[i].HostPort(),
                                  tls_.PeerServerCredentials(),
                                  &peer_ports_[i]);
  }
  peer_builder.RegisterService(transport_->service());
  // Followers forward client writes to the leader's peer port.
  peer_builder.RegisterService(peer_kv_.get());
  peer_builder.RegisterService(&peer_maintenance_);
  peer_builder.RegisterService(&peer_cluster_);
  peer_builder.RegisterService(peer_service_.get());
  peer_builder.RegisterService(peer_lease_.get());
  peer_server_ = peer_builder.BuildAndStart();
  if (peer_server_ == nullptr) {
    client_listener_->Stop();
    if (metrics_listener_ != nullptr) metrics_listener_->Stop();
    TakeClientServer()->Shutdown();
    return absl::UnavailableError(
        "cannot listen on --listen-peer-urls: check that the addresses exist "
        "on this host and the ports are free");
  }

  watch_hub_->Start();
  node_->Start();
  lease_driver_->Start();
  compactor_.Start("compactor", MonotonicNow() + absl::Seconds(1), [this] {
    CompactorStep();
    return MonotonicNow() + absl::Seconds(1);
  });
  if (config_.corrupt_check_time > absl::ZeroDuration()) {
    corruption_checker_->Start(config_.corrupt_check_time);
  }
  if (config_.auto_compaction.enabled()) {
    AutoCompactor::Hooks hooks;
    hooks.revision = [this] { return store_->revision(); };
    hooks.compact = [this](int64_t revision) {
      etcdserverpb::CompactionRequest req;
      req.set_revision(revision);
      etcdserverpb::CompactionResponse resp;
      grpc::ServerContext ctx;
      grpc::Status st = kv_->Compact(&ctx, &req, &resp);
      return FromGrpc(st);
    };
    hooks.active = [this] { return node_->is_leader(); };
    auto_compactor_ = std::make_unique<AutoCompactor>(config_.auto_compaction,
                                                      std::move(hooks));
    auto_compactor_->Start();
  }
  for (size_t i = 0; i < config_.listen_peer.size(); ++i) {
    Logf(LogLevel::kInfo, "server", "listening for peers on %s (port %d)",
         config_.listen_peer[i].ToString(), peer_ports_[i]);
  }
  for (size_t i = 0; i < config_.listen_metrics.size(); ++i) {
    Logf(LogLevel::kInfo, "server", "listening for metrics on %s (port %d)",
         config_.listen_metrics[i].ToString(), metrics_ports_[i]);
  }
  for (size_t i = 0; i < config_.listen_client.size(); ++i) {
    Logf(LogLevel::kInfo, "server", "serving client requests on %s (port %d)",
         config_.listen_client[i].ToString(), client_ports_[i]);
    if (config_.listen_client[i].https()) {
      Logf(LogLevel::kInfo, "server",
           "%s serves gRPC over TLS only (%s): /health, /metrics and the "
           "JSON gateway are served on http client URLs and "
           "--listen-metrics-urls",
           config_.listen_client[i].ToString(),
           config_.client_tls.client_cert_auth
               ? "client certificates required"
               : "client certificates not requested");
    }
  }
  // "ready to serve client requests" follows once the member has published
  // its name and client URLs, as etcd's does.
  publisher_ = std::thread([this] { PublishLoop(); });
  return absl::OkStatus();
}

void Server::LogReady() {
  for (size_t i = 0; i < config_.listen_client.size(); ++i) {
    Logf(LogLevel::kInfo, "server",
         "ready to serve client requests on %s (port %d)",
         config_.listen_client[i].ToString(), client_ports_[i]);
  }
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  compactor_.Stop();
  if (auto_compactor_ != nullptr) auto_compactor_->Stop();
  if (corruption_checker_ != nullptr) corruption_checker_->Stop();
  if (publisher_.joinable()) publisher_.join();
  if (retirer_.joinable() && retirer_.get_id() != std::this_thread::get_id()) {
    retirer_.join();
  }
  if (lease_driver_ != nullptr) lease_driver_->Stop();
  auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace);
  // No new client connection, and every HTTP one ends (its calls are
  // cancelled); then the gRPC server stops.
  if (client_listener_ != nullptr) client_listener_->Stop();
  if (metrics_listener_ != nullptr) metrics_listener_->Stop();
  std::unique_ptr<grpc::Server> client_server = TakeClientServer();
  if (client_server != nullptr) {
    client_server->Shutdown(deadline);
    client_server->Wait();
  }
  if (transport_ != nullptr) transport_->Stop();
  if (peer_server_ != nullptr) {
    peer_server_->Shutdown(deadline);
    peer_server_->Wait();
    peer_server_.reset();
  }
  if (node_ != nullptr) node_->Stop();
  // After the client server: no stream is left to use the hub.
  if (watch_hub_ != nullptr) watch_hub_->Stop();
}

}  // namespace lockd
