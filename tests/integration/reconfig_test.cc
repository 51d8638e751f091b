// The reconfiguration test (issue 6): a cluster is resized under a live
// workload of three kinds of client, and none of them may notice.
//
// Workloads, for the whole run:
//  (a) lockd's client given ONLY the first member's endpoint: puts with
//      linearizable reads, a prefix watch (Client::Watch), and a lock held
//      with lease keep-alive (etcd's client-side recipe: a lease, and a
//      create-if-absent txn on the lock key attached to it) while a second
//      contender keeps trying to take it;
//  (b) Debian's etcdctl with a static list of the first three endpoints;
//  (c) an unmodified etcd client, the npm etcd3 client (tests/node/
//      reconfig_load.js), with the same static list: puts and a watch.
// Asserted for lockd: no call fails; every watch delivers every event of the
// history exactly once, in order; the lock is never lost while its holder
// lives and never held twice; no acknowledged write is lost. The longest
// call per client is printed (the goal is under 2 s), not asserted.
//
// Scenarios: 3 -> 5 -> 3 in CI (plus the same with a kept member paused by
// SIGSTOP while the first member and the leader are removed); with
// LOCKD_TEST_LONG=1 (scripts/test.sh --long) 3 -> 5 -> 9 -> 3, with and
// without a pause, and the same scenario against Debian's etcd 3.4
// (/usr/bin/etcd, resized with etcdctl member add/remove), printed side by
// side. etcd's figures are a report, not an assertion.
#include <gtest/gtest.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "lockd/client/client.h"
#include "tests/harness/cluster.h"
#include "tests/harness/history.h"
#include "tests/harness/process.h"
#include "tests/harness/workload.h"

namespace lockd::testing {
namespace {

constexpr char kPrefix[] = "r/";
constexpr char kLockKey[] = "r/lock";
constexpr absl::Duration kCallTimeout = absl::Seconds(10);

bool LongRun() {
  const char* v = std::getenv("LOCKD_TEST_LONG");
  return v != nullptr && std::string(v) == "1";
}

// ---------------------------------------------------------------------------
// The systems under test: lockd resized by `lockctl cluster resize`, etcd by
// `etcdctl member add/remove`. Members are LocalCluster specs (etcd takes
// the same flags as lockd).

class System {
 public:
  System(bool etcd, const std::string& tag) : etcd_(etcd), cluster_(3, tag) {
    if (etcd_) cluster_.set_binary("/usr/bin/etcd");
  }
  // Stops every member and deletes the data directories: up to nine
  // members' stores (etcd preallocates 64 MB of WAL each) would otherwise
  // stay in the test's sandbox.
  ~System() {
    for (int i = 0; i < cluster_.size(); ++i) {
      Subprocess& p = cluster_.process(i);
      if (p.running()) {
        p.Signal(SIGCONT);  // a paused member cannot handle SIGTERM
        (void)p.Stop(absl::Seconds(5));
      }
      std::error_code ignored;
      std::filesystem::remove_all(cluster_.member(i).data_dir, ignored);
    }
  }

  const char* name() const { return etcd_ ? "etcd 3.4" : "lockd"; }
  bool etcd() const { return etcd_; }
  LocalCluster& cluster() { return cluster_; }
  const std::set<int>& members() const { return members_; }

  absl::Status Start() {
    if (etcd_) {
      // An etcd member is ready only once a quorum has formed: start all
      // three together.
      std::vector<absl::Status> started(3);
      std::vector<std::thread> starters;
      for (int i = 0; i < 3; ++i) {
        starters.emplace_back([&, i] { started[i] = cluster_.StartMember(i); });
      }
      for (std::thread& t : starters) t.join();
      for (const absl::Status& s : started) {
        if (!s.ok()) return s;
      }
    } else if (absl::Status s = cluster_.StartAll(); !s.ok()) {
      return s;
    }
    members_ = {0, 1, 2};
    if (cluster_.WaitForLeader(absl::Seconds(30)) == 0) {
      return absl::UnavailableError("no leader");
    }
    // Every member has published its client URL (a resize waits for that,
    // and the lockd client syncs from it).
    for (absl::Time until = absl::Now() + absl::Seconds(20);
         absl::Now() < until;) {
      absl::StatusOr<CommandResult> l =
          RunEtcdctl(Endpoint(0), {"member", "list"});
      bool all = l.ok() && l->exit_code == 0;
      for (int i = 0; all && i < 3; ++i) {
        all = l->out.find(cluster_.member(i).client_url()) != std::string::npos;
      }
      if (all) return absl::OkStatus();
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::DeadlineExceededError("members did not publish their URLs");
  }

  std::string Endpoint(int i) const { return cluster_.member(i).endpoint(); }
  // Current members' endpoints, comma-separated, skipping `except`.
  std::string Endpoints(int except = -1) const {
    std::vector<std::string> out;
    for (int i : members_) {
      if (i != except) out.push_back(Endpoint(i));
    }
    return absl::StrJoin(out, ",");
  }

  // Index of the leader among the current members, -1 if none is known.
  int Leader() {
    const uint64_t id = cluster_.WaitForLeader(absl::Seconds(30));
    return id == 0 ? -1 : cluster_.MemberIndexOf(id);
  }

  // Adds member specs until there are `n` in all; returns the new indices.
  std::vector<int> NewSpecs(int n) {
    std::vector<int> out;
    while (cluster_.size() < n) out.push_back(cluster_.AddSpec());
    return out;
  }

  // Makes the membership exactly `target`; `log` gets what was run.
  // `contact` is a member that stays (and is not paused) to send the
  // changes to.
  absl::Status Resize(const std::set<int>& target, int contact,
                      std::string* log) {
    absl::Status s = etcd_ ? ResizeEtcd(target, contact, log)
                           : ResizeLockd(target, contact, log);
    if (s.ok()) members_ = target;
    return s;
  }

 private:
  absl::Status ResizeLockd(const std::set<int>& target, int contact,
                           std::string* log) {
    std::vector<std::string> spec;
    for (int i : target) {
      spec.push_back(absl::StrCat(cluster_.member(i).name, "=",
                                  cluster_.member(i).peer_url()));
    }
    // New members start now and wait to be added; the resize adds them one
    // at a time.
    std::vector<int> fresh;
    for (int i : target) {
      if (!members_.count(i)) fresh.push_back(i);
    }
    std::vector<absl::Status> started(fresh.size());
    std::vector<std::thread> starters;
    for (size_t k = 0; k < fresh.size(); ++k) {
      starters.emplace_back([&, k] {
        started[k] = cluster_.StartMember(
            fresh[k], {"--initial-cluster-state=existing"}, absl::Seconds(180));
      });
    }
    absl::StatusOr<CommandResult> r = RunCommand(
        {Runfile("lockd/lockctl"), "--endpoints=" + Endpoint(contact),
         "cluster", "resize", "--members=" + absl::StrJoin(spec, ","),
         "--wait-timeout=120s"},
        absl::Seconds(240));
    for (std::thread& t : starters) t.join();
    if (!r.ok()) return r.status();
    absl::StrAppend(log, "lockctl cluster resize (exit ", r->exit_code, ")\n",
                    r->out, r->err);
    if (r->exit_code != 0) {
      return absl::InternalError(absl::StrCat("resize failed:\n", r->err));
    }
    for (const absl::Status& s : started) {
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // etcd's own way: `member add` and start the member with the cluster
  // etcdctl printed, one at a time; `member remove`, one at a time (etcd
  // 3.4 removes a leader without handing leadership over first).
  absl::Status ResizeEtcd(const std::set<int>& target, int contact,
                          std::string* log) {
    for (int i : target) {
      if (members_.count(i)) continue;
      // etcd refuses to add or remove a voter ("unhealthy cluster") until
      // every member has been connected for 5 s; ask again until it agrees.
      absl::StatusOr<CommandResult> add;
      for (absl::Time until = absl::Now() + absl::Seconds(60);;) {
        add = RunEtcdctl(Endpoint(contact),
                         {"member", "add", cluster_.member(i).name,
                          "--peer-urls=" + cluster_.member(i).peer_url()});
        if (!add.ok() || add->exit_code == 0 ||
            add->err.find("unhealthy cluster") == std::string::npos ||
            absl::Now() > until) {
          break;
        }
        absl::SleepFor(absl::Milliseconds(500));
      }
      if (!add.ok()) return add.status();
      absl::StrAppend(log, "etcdctl member add ", cluster_.member(i).name,
                      " (exit ", add->exit_code, ")\n", add->err);
      if (add->exit_code != 0) return absl::InternalError(add->err);
      std::string initial;
      for (absl::string_view line : absl::StrSplit(add->out, '\n')) {
        if (absl::ConsumePrefix(&line, "ETCD_INITIAL_CLUSTER=\"")) {
          absl::ConsumeSuffix(&line, "\"");
          initial = std::string(line);
        }
      }
      if (initial.empty()) return absl::InternalError(add->out);
      if (absl::Status s =
              cluster_.StartMember(i,
                                   {"--initial-cluster-state=existing",
                                    "--initial-cluster=" + initial},
                                   absl::Seconds(120));
          !s.ok()) {
        return s;
      }
      members_.insert(i);
    }
    for (int i : std::set<int>(members_)) {
      if (target.count(i)) continue;
      // etcd refuses while the cluster is "unhealthy" (a member connected
      // for less than 5 s) and may time out while it elects a new leader
      // (when the leader itself was removed): ask again until the member is
      // gone from the list.
      bool removed = false;
      for (absl::Time until = absl::Now() + absl::Seconds(60);
           !removed && absl::Now() < until;) {
        absl::StatusOr<CommandResult> list =
            RunEtcdctl(Endpoint(contact), {"member", "list"});
        if (!list.ok()) return list.status();
        std::string id;
        for (absl::string_view line : absl::StrSplit(list->out, '\n')) {
          std::vector<std::string> f = absl::StrSplit(line, ", ");
          if (f.size() > 2 && f[2] == cluster_.member(i).name) id = f[0];
        }
        if (list->exit_code == 0 && id.empty()) {
          removed = true;
          break;
        }
        if (id.empty()) {
          absl::SleepFor(absl::Milliseconds(500));
          continue;
        }
        absl::StatusOr<CommandResult> rm =
            RunEtcdctl(Endpoint(contact), {"member", "remove", id});
        if (!rm.ok()) return rm.status();
        absl::StrAppend(log, "etcdctl member remove ", cluster_.member(i).name,
                        " (exit ", rm->exit_code, ")\n",
                        rm->exit_code == 0 ? "" : rm->err);
        if (rm->exit_code == 0) {
          removed = true;
        } else {
          absl::SleepFor(absl::Milliseconds(500));
        }
      }
      if (!removed) {
        return absl::DeadlineExceededError(absl::StrCat(
            "etcd did not remove ", cluster_.member(i).name, " in 60 s"));
      }
      members_.erase(i);
      // A removed etcd member stops by itself; make sure it is gone.
      (void)cluster_.process(i).Wait(absl::Seconds(10));
      if (cluster_.process(i).running()) cluster_.StopMember(i);
    }
    return absl::OkStatus();
  }

  bool etcd_;
  LocalCluster cluster_;
  std::set<int> members_;
};

// ---------------------------------------------------------------------------
// Workload (a): the lock. The holder takes kLockKey on its lease and keeps
// the lease alive; a contender, on its own lease, tries to take it (etcd's
// create-if-absent txn) and must always fail; both check who holds it.
// Both leases are kept alive until the lock has changed hands at the end
// (`stop_keepalives`), not only until the workloads stop (`stop`): the
// final checks use them, and a lease whose keep-alive had already ended
// would expire (5 s) while the other workloads wind down, however healthy
// the cluster.

struct LockState {
  std::atomic<bool> stop{false};
  std::atomic<bool> stop_keepalives{false};
  std::atomic<int64_t> holder_lease{0};
  std::atomic<int64_t> contender_lease{0};
  std::atomic<int64_t> acquired_revision{0};
  std::atomic<int64_t> renewals{0};
  absl::Mutex mu;
  absl::Duration longest_renewal_gap ABSL_GUARDED_BY(mu);
  absl::Status keepalive_end ABSL_GUARDED_BY(mu);
  // The contender's keep-alive: how it ended, its last renewal (for the
  // message should the contender's lease be gone at the end) and its
  // longest gap between renewals.
  absl::Status contender_keepalive_end ABSL_GUARDED_BY(mu);
  absl::Time contender_renewed ABSL_GUARDED_BY(mu);
  absl::Duration contender_longest_gap ABSL_GUARDED_BY(mu);
  std::vector<std::string> violations ABSL_GUARDED_BY(mu);

  void Violation(const std::string& v) {
    absl::MutexLock lock(&mu);
    violations.push_back(v);
  }
};

etcdserverpb::TxnRequest TakeLock(int64_t lease, const std::string& who) {
  etcdserverpb::TxnRequest txn;
  auto* cmp = txn.add_compare();
  cmp->set_key(kLockKey);
  cmp->set_target(etcdserverpb::Compare::CREATE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_create_revision(0);
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(kLockKey);
  put->set_value(who);
  put->set_lease(lease);
  txn.add_failure()->mutable_request_range()->set_key(kLockKey);
  return txn;
}

absl::StatusOr<int64_t> Grant(client::Client* c, Tally* t) {
  etcdserverpb::LeaseGrantRequest g;
  g.set_ttl(5);
  const absl::Time start = absl::Now();
  absl::StatusOr<etcdserverpb::LeaseGrantResponse> r = c->LeaseGrant(g);
  t->Call("lease grant", absl::Now() - start, r.status());
  if (!r.ok()) return r.status();
  return r->id();
}

// Takes the lock for the holder. Returns false (with a failure recorded) if
// it could not.
bool AcquireLock(client::Client* c, LockState* l, Tally* t) {
  absl::StatusOr<int64_t> lease = Grant(c, t);
  if (!lease.ok()) return false;
  l->holder_lease = *lease;
  const absl::Time start = absl::Now();
  absl::StatusOr<etcdserverpb::TxnResponse> r =
      c->Txn(TakeLock(*lease, "holder"));
  absl::Status s = r.status();
  if (r.ok() && !r->succeeded()) s = absl::AbortedError("lock is taken");
  t->Call("lock acquire", absl::Now() - start, s);
  if (!s.ok()) return false;
  l->acquired_revision = r->header().revision();
  return true;
}

// The holder's keep-alive, until l->stop_keepalives.
void HoldLock(client::Client* c, LockState* l) {
  absl::Time last = absl::Now();
  absl::Status s = c->LeaseKeepAlive(
      l->holder_lease.load(), [&](const etcdserverpb::LeaseKeepAliveResponse&) {
        const absl::Time now = absl::Now();
        ++l->renewals;
        absl::MutexLock lock(&l->mu);
        l->longest_renewal_gap = std::max(l->longest_renewal_gap, now - last);
        last = now;
        return !l->stop_keepalives.load();
      });
  absl::MutexLock lock(&l->mu);
  l->keepalive_end = s;
}

// The contender's lease (granted before the workloads start).
bool GrantContender(client::Client* c, LockState* l, Tally* t) {
  absl::StatusOr<int64_t> lease = Grant(c, t);
  if (!lease.ok()) return false;
  l->contender_lease = *lease;
  absl::MutexLock lock(&l->mu);
  l->contender_renewed = absl::Now();
  return true;
}

// The contender's keep-alive, until l->stop_keepalives.
void KeepContenderAlive(client::Client* c, LockState* l) {
  absl::Status end = c->LeaseKeepAlive(
      l->contender_lease.load(),
      [&](const etcdserverpb::LeaseKeepAliveResponse&) {
        absl::MutexLock lock(&l->mu);
        const absl::Time now = absl::Now();
        l->contender_longest_gap =
            std::max(l->contender_longest_gap, now - l->contender_renewed);
        l->contender_renewed = now;
        return !l->stop_keepalives.load();
      });
  absl::MutexLock lock(&l->mu);
  l->contender_keepalive_end = end;
}

// The contender, until l->stop: tries to take the lock and reads who holds
// it, a few times a second.
void ContendForLock(client::Client* c, LockState* l, Tally* t,
                    absl::Notification* stopped) {
  const int64_t lease = l->contender_lease.load();
  while (!l->stop.load()) {
    absl::Time start = absl::Now();
    absl::StatusOr<etcdserverpb::TxnResponse> r =
        c->Txn(TakeLock(lease, "contender"));
    t->Call("lock contend", absl::Now() - start, r.status());
    if (r.ok() && r->succeeded()) {
      l->Violation(absl::StrCat("the contender took the lock at revision ",
                                r->header().revision(), " while it was held"));
    }
    etcdserverpb::RangeRequest get;
    get.set_key(kLockKey);
    start = absl::Now();
    absl::StatusOr<etcdserverpb::RangeResponse> g = c->Range(get);
    t->Call("lock check", absl::Now() - start, g.status());
    if (g.ok() && (g->kvs_size() != 1 || g->kvs(0).value() != "holder" ||
                   g->kvs(0).lease() != l->holder_lease.load() ||
                   g->kvs(0).create_revision() != l->acquired_revision)) {
      l->Violation(absl::StrCat(
          "the holder lost the lock (revision ", g->header().revision(),
          ", read on member ", absl::Hex(g->header().member_id()),
          ", lock taken at revision ", l->acquired_revision.load(), "): ",
          g->kvs_size() == 0 ? std::string("no key")
                             : g->kvs(0).ShortDebugString()));
    }
    // Pacing, not correctness: a few attempts a second are plenty.
    stopped->WaitForNotificationWithTimeout(absl::Milliseconds(200));
  }
}

// ---------------------------------------------------------------------------
// Workload (c): the npm etcd3 client, run by Node.

std::string NodeScript() {
  std::string link = Runfile("tests/node/reconfig_load.js");
  char real[PATH_MAX];
  if (realpath(link.c_str(), real) == nullptr) return link;
  return real;
}

struct NodeReport {
  Tally tally;
  int64_t ready_revision = 0;
  std::vector<std::string> events;
  bool done = false;
  std::vector<std::string> notes;
  std::string raw_tail;
};

void ParseNode(const std::string& output, NodeReport* out) {
  NodeReport& rep = *out;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (absl::ConsumePrefix(&line, "ready ")) {
      (void)absl::SimpleAtoi(line, &rep.ready_revision);
    } else if (absl::ConsumePrefix(&line, "event ")) {
      rep.events.emplace_back(line);
    } else if (absl::ConsumePrefix(&line, "call ")) {
      std::pair<std::string, std::string> f = absl::StrSplit(line, ' ');
      int64_t ms = 0;
      (void)absl::SimpleAtoi(f.first, &ms);
      rep.tally.Call(f.second, absl::Milliseconds(ms), absl::OkStatus());
    } else if (absl::ConsumePrefix(&line, "fail ")) {
      absl::MutexLock lock(&rep.tally.mu);
      rep.tally.failures.emplace_back(line);
    } else if (absl::ConsumePrefix(&line, "acked ")) {
      std::pair<std::string, std::string> f = absl::StrSplit(line, ' ');
      rep.tally.Acked(f.first, f.second);
    } else if (absl::ConsumePrefix(&line, "note ")) {
      rep.notes.emplace_back(line);
    } else if (line == "done") {
      rep.done = true;
    }
  }
  rep.raw_tail = output.substr(output.size() > 2000 ? output.size() - 2000 : 0);
}

// ---------------------------------------------------------------------------
// Watches against the history.

struct WatchCheck {
  size_t expected = 0;
  size_t delivered = 0;
  size_t missing = 0;
  size_t duplicated = 0;
  size_t out_of_order = 0;
  std::string first_difference;
  bool exact() const {
    return missing == 0 && duplicated == 0 && out_of_order == 0 &&
           delivered == expected;
  }
};

int64_t LineRevision(const std::string& line) {
  int64_t rev = 0;
  (void)absl::SimpleAtoi(line.substr(line.rfind('@') + 1), &rev);
  return rev;
}

// `want`: the history up to `end_revision`; `all_got`: what a watch
// delivered, which may go on past the end.
WatchCheck CompareWithHistory(const std::vector<std::string>& want,
                              const std::vector<std::string>& all_got,
                              int64_t end_revision) {
  std::vector<std::string> got;
  for (const std::string& g : all_got) {
    if (LineRevision(g) <= end_revision) got.push_back(g);
  }
  WatchCheck c;
  c.expected = want.size();
  c.delivered = got.size();
  std::map<std::string, int> count;
  for (const std::string& g : got) ++count[g];
  std::set<std::string> want_set(want.begin(), want.end());
  for (const std::string& w : want) {
    if (!count.count(w)) {
      ++c.missing;
      if (c.first_difference.empty()) c.first_difference = "missing " + w;
    }
  }
  for (const auto& [line, n] : count) {
    if (n > 1) c.duplicated += n - 1;
    if (!want_set.count(line) && c.first_difference.empty()) {
      c.first_difference = "not in the history: " + line;
    }
  }
  size_t wi = 0;
  for (const std::string& g : got) {
    while (wi < want.size() && want[wi] != g) ++wi;
    if (wi == want.size()) {
      ++c.out_of_order;
      wi = 0;
    }
  }
  if (c.first_difference.empty() && got != want) {
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
      if (got[i] != want[i]) {
        c.first_difference =
            absl::StrCat("event ", i, ": got ", got[i], ", want ", want[i]);
        break;
      }
    }
  }
  return c;
}

// ---------------------------------------------------------------------------
// One run: a system, a scenario, every workload, and what the clients saw.

struct Scenario {
  // Sizes after each step, e.g. {5, 3} or {5, 9, 3}. Growing adds fresh
  // members; shrinking keeps the newest members, dropping the first
  // member (where the clients were pinned) and the leader.
  std::vector<int> sizes;
  // Pause (SIGSTOP) a member that stays during the last step, resumed
  // (SIGCONT) once the first member is out of the member list.
  bool pause = false;
};

struct ClientRow {
  std::string client;
  int64_t calls = 0;
  size_t failed = 0;
  absl::Duration longest;
  std::string longest_what;
  std::string first_failures;
  std::string watch;  // "n/m, k missing, j duplicated" or ""
};

struct RunResult {
  std::string system;
  std::vector<ClientRow> rows;
  std::vector<std::string> lock_violations;
  std::vector<std::string> lost_writes;
  // What went wrong beyond the clients' own figures (etcd's run records
  // instead of failing the test).
  std::vector<std::string> notes;
  WatchCheck lockd_watch, node_watch;
  int lockd_watch_streams = 0;
  bool node_done = false;
  absl::Status keepalive_end;
  absl::Duration longest_renewal_gap;
  absl::Duration contender_longest_gap;
  std::string log;
  bool completed = false;  // the scenario ran to the end
};

ClientRow Row(const std::string& name, Tally* t) {
  absl::MutexLock lock(&t->mu);
  ClientRow r;
  r.client = name;
  r.calls = t->calls;
  r.failed = t->failures.size();
  r.longest = t->longest;
  r.longest_what = t->longest_what;
  r.first_failures = absl::StrJoin(
      t->failures.begin(),
      t->failures.begin() + std::min<size_t>(3, t->failures.size()), "\n    ");
  return r;
}

std::string WatchSummary(const WatchCheck& w) {
  return absl::StrCat(w.delivered, "/", w.expected, " events, ", w.missing,
                      " missing, ", w.duplicated, " duplicated, ",
                      w.out_of_order, " out of order");
}

void RunScenario(System* sys, const Scenario& sc, RunResult* res) {
  res->system = sys->name();
  // lockd must pass these checks; etcd's misses are reported.
  auto check = [&](bool ok, const std::string& what) {
    if (ok) return;
    if (sys->etcd()) {
      res->notes.push_back(what);
    } else {
      ADD_FAILURE() << what;
    }
  };
  {
    absl::Status s = sys->Start();
    ASSERT_TRUE(s.ok()) << s;
  }
  const std::string first_three = sys->Endpoints();
  const int first = 0;

  // (a) lockd's client, given only the first member.
  client::ClientOptions o;
  o.endpoints = {sys->Endpoint(first)};
  o.call_timeout = kCallTimeout;
  o.auto_sync_interval = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<client::Client>> c = client::Client::Create(o);
  ASSERT_TRUE(c.ok()) << c.status();
  Tally lockd_tally, lock_tally, etcdctl_tally;

  etcdserverpb::PutRequest start_put;
  start_put.set_key(absl::StrCat(kPrefix, "start"));
  absl::StatusOr<etcdserverpb::PutResponse> started = (*c)->Put(start_put);
  ASSERT_TRUE(started.ok()) << started.status();
  const int64_t start_revision = started->header().revision();

  absl::Mutex watch_mu;
  std::vector<std::string> watched;
  etcdserverpb::WatchCreateRequest wreq;
  wreq.set_key(kPrefix);
  wreq.set_range_end(PrefixEnd(kPrefix));
  wreq.set_start_revision(start_revision);
  absl::StatusOr<std::unique_ptr<client::Watcher>> watcher =
      (*c)->Watch(wreq, [&](const etcdserverpb::WatchResponse& r) {
        absl::MutexLock lock(&watch_mu);
        for (const mvccpb::Event& e : r.events()) {
          watched.push_back(EventLine(e));
        }
        return true;
      });
  ASSERT_TRUE(watcher.ok()) << watcher.status();

  LockState lock_state;
  ASSERT_TRUE(AcquireLock(c->get(), &lock_state, &lock_tally))
      << lock_tally.FirstFailures();
  ASSERT_TRUE(GrantContender(c->get(), &lock_state, &lock_tally))
      << lock_tally.FirstFailures();

  // (c) the Node etcd3 client.
  const std::string stop_file = TempDir("node-stop") + "/stop";
  Subprocess node;
  // The client's own log goes to the test outputs; LOCKD_NODE_GRPC_TRACE
  // (e.g. "channel,subchannel,call_stream") turns on grpc-js tracing there.
  std::vector<std::string> node_env;
  if (const char* trace = std::getenv("LOCKD_NODE_GRPC_TRACE")) {
    node_env = {absl::StrCat("GRPC_TRACE=", trace), "GRPC_VERBOSITY=DEBUG"};
  }
  const char* outputs = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  ASSERT_TRUE(
      node.Start({"/usr/bin/env", "node", NodeScript(), first_three, kPrefix,
                  stop_file},
                 node_env,
                 outputs == nullptr
                     ? ""
                     : absl::StrCat(outputs, "/node-",
                                    sys->etcd() ? "etcd" : "lockd", ".log"))
          .ok());
  ASSERT_TRUE(node.WaitForOutput("ready ", absl::Seconds(30))) << node.output();

  std::atomic<bool> stop{false};
  std::atomic<size_t> most_endpoints{0};
  absl::Notification lock_stopped;
  std::thread puts(LockdPutGetLoop, c->get(), absl::StrCat(kPrefix, "lockd/"),
                   &stop, &lockd_tally, &most_endpoints);
  std::thread holder(HoldLock, c->get(), &lock_state);
  std::thread contender_keepalive(KeepContenderAlive, c->get(), &lock_state);
  std::thread contender(ContendForLock, c->get(), &lock_state, &lock_tally,
                        &lock_stopped);
  // Ends both keep-alives once the lock has changed hands below, or when an
  // assertion returns early (a joinable thread must not be destroyed).
  struct KeepAlivesEnd {
    LockState* l;
    std::thread* threads[2];
    void operator()() {
      l->stop_keepalives = true;
      for (std::thread* t : threads) {
        if (t->joinable()) t->join();
      }
    }
    ~KeepAlivesEnd() { (*this)(); }
  } end_keepalives{&lock_state, {&holder, &contender_keepalive}};
  std::thread etcdctl(EtcdctlPutGetLoop, first_three,
                      absl::StrCat(kPrefix, "etcdctl/"), &stop, &etcdctl_tally);
  LetRun(&lockd_tally, 20);

  bool scenario_ok = true;
  for (size_t step = 0; step < sc.sizes.size() && scenario_ok; ++step) {
    const int n = sc.sizes[step];
    const int have = static_cast<int>(sys->members().size());
    std::set<int> target = sys->members();
    int contact = *sys->members().rbegin();
    int paused = -1;
    std::printf("[%s] step %zu: %d -> %d members\n", sys->name(), step + 1,
                have, n);
    if (n > have) {
      for (int i : sys->NewSpecs(sys->cluster().size() + n - have)) {
        target.insert(i);
      }
    } else {
      // Keep the newest members that are not the leader (nor the first).
      const int leader = sys->Leader();
      std::vector<int> keep;
      for (auto it = sys->members().rbegin(); it != sys->members().rend();
           ++it) {
        if (*it != leader && *it != first &&
            static_cast<int>(keep.size()) < n) {
          keep.push_back(*it);
        }
      }
      target = std::set<int>(keep.begin(), keep.end());
      contact = keep.front();
      std::printf("[%s] removing the first member m1 and the leader m%d\n",
                  sys->name(), leader + 1);
      if (sc.pause && step + 1 == sc.sizes.size()) {
        // Not the contact (the changes go there), nor in the static lists.
        paused = keep[1];
        std::printf("[%s] pausing m%d (SIGSTOP) during the change\n",
                    sys->name(), paused + 1);
        sys->cluster().process(paused).Signal(SIGSTOP);
      }
    }
    std::fflush(stdout);
    std::atomic<bool> resize_done{false};
    std::thread resumer;
    if (paused >= 0) {
      // Resume the paused member once the first member has been removed
      // (or the resize ended), polling the member list.
      const absl::Time paused_at = absl::Now();
      resumer = std::thread([&, paused, contact, paused_at] {
        const std::string m1 = sys->cluster().member(first).peer_url();
        for (absl::Time until = absl::Now() + absl::Seconds(120);
             !resize_done.load() && absl::Now() < until;) {
          absl::StatusOr<CommandResult> l =
              RunEtcdctl(sys->Endpoint(contact), {"member", "list"});
          if (l.ok() && l->exit_code == 0 &&
              l->out.find(m1) == std::string::npos) {
            break;
          }
          absl::SleepFor(absl::Milliseconds(100));
        }
        std::printf("[%s] resuming m%d (SIGCONT) after %s\n", sys->name(),
                    paused + 1,
                    absl::FormatDuration(absl::Now() - paused_at).c_str());
        sys->cluster().process(paused).Signal(SIGCONT);
      });
    }
    absl::Status s = sys->Resize(target, contact, &res->log);
    resize_done = true;
    if (resumer.joinable()) resumer.join();
    check(s.ok(), absl::StrCat("resize: ", s.ToString(), "\n", res->log));
    scenario_ok = s.ok();
    // The lockd client follows the member list (it syncs every second).
    for (absl::Time until = absl::Now() + absl::Seconds(20);
         static_cast<int>((*c)->current_endpoints().size()) != n &&
         absl::Now() < until;) {
      absl::SleepFor(absl::Milliseconds(100));
    }
    check((*c)->current_endpoints().size() == static_cast<size_t>(n),
          absl::StrCat("the lockd client balances over ",
                       absl::StrJoin((*c)->current_endpoints(), ","),
                       ", not the ", n, " members"));
    LetRun(&lockd_tally, 20);
  }
  res->completed = scenario_ok;
  check(most_endpoints.load() >= 5u,
        "the lockd client never balanced over the grown cluster");

  // Stop the workloads; then one last write marks the end of the history.
  stop = true;
  lock_state.stop = true;
  lock_stopped.Notify();
  puts.join();
  contender.join();
  etcdctl.join();

  client::ClientOptions ro;
  for (int i : sys->members()) ro.endpoints.push_back(sys->Endpoint(i));
  ro.auto_sync_interval = absl::ZeroDuration();
  ro.call_timeout = kCallTimeout;
  absl::StatusOr<std::unique_ptr<client::Client>> reader =
      client::Client::Create(ro);
  ASSERT_TRUE(reader.ok());

  // The holder still holds the lock; it releases it, and then the
  // contender can take it (so its failures above meant something).
  etcdserverpb::RangeRequest get_lock;
  get_lock.set_key(kLockKey);
  absl::StatusOr<etcdserverpb::RangeResponse> held = (*reader)->Range(get_lock);
  ASSERT_TRUE(held.ok()) << held.status();
  if (held->kvs_size() != 1 ||
      held->kvs(0).lease() != lock_state.holder_lease.load()) {
    lock_state.Violation("the lock was not the holder's at the end");
  }
  etcdserverpb::DeleteRangeRequest release;
  release.set_key(kLockKey);
  ASSERT_TRUE((*reader)->DeleteRange(release).ok());
  absl::StatusOr<etcdserverpb::TxnResponse> taken =
      (*reader)->Txn(TakeLock(lock_state.contender_lease.load(), "contender"));
  // The lock has changed hands: the keep-alives may end now.
  end_keepalives();
  {
    absl::MutexLock lock(&lock_state.mu);
    res->keepalive_end = lock_state.keepalive_end;
    res->longest_renewal_gap = lock_state.longest_renewal_gap;
    res->contender_longest_gap = lock_state.contender_longest_gap;
  }
  if (!taken.ok()) {
    absl::MutexLock lock(&lock_state.mu);
    lock_state.violations.push_back(absl::StrCat(
        "the contender could not take the released lock: ",
        taken.status().ToString(), " (its keep-alive ended ",
        lock_state.contender_keepalive_end.ToString(), "; last renewed ",
        absl::FormatDuration(absl::Now() - lock_state.contender_renewed),
        " ago)"));
  } else if (!taken->succeeded()) {
    lock_state.Violation("the contender could not take the released lock");
  }

  etcdserverpb::PutRequest end_put;
  end_put.set_key(absl::StrCat(kPrefix, "end"));
  absl::StatusOr<etcdserverpb::PutResponse> ended = (*reader)->Put(end_put);
  ASSERT_TRUE(ended.ok()) << ended.status();
  const int64_t end_revision = ended->header().revision();
  {
    std::ofstream f(stop_file);
    f << end_revision << "\n";
  }
  absl::StatusOr<int> node_exit = node.Wait(absl::Seconds(120));
  check(node_exit.ok() && *node_exit == 0,
        absl::StrCat("the Node client did not end cleanly:\n",
                     node.output().substr(0, 4000)));
  NodeReport node_report;
  ParseNode(node.output(), &node_report);
  res->node_done = node_report.done;

  // The lockd watch reaches the end (bounded), then stops.
  for (absl::Time until = absl::Now() + absl::Seconds(60);
       absl::Now() < until;) {
    if ((*watcher)->next_revision() > end_revision) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  res->lockd_watch_streams = (*watcher)->streams();
  (*watcher)->Cancel();
  {
    absl::Status end = (*watcher)->Wait(absl::Seconds(10));
    check(end.ok(),
          absl::StrCat("the lockd watch ended with ", end.ToString()));
  }

  absl::StatusOr<std::vector<mvccpb::Event>> history =
      ReadHistory(sys->Endpoint(*sys->members().begin()), kPrefix,
                  PrefixEnd(kPrefix), start_revision, end_revision);
  ASSERT_TRUE(history.ok()) << history.status();
  std::vector<std::string> want, want_node;
  for (const mvccpb::Event& e : *history) {
    want.push_back(EventLine(e));
    if (e.kv().mod_revision() > node_report.ready_revision) {
      want_node.push_back(EventLine(e));
    }
  }
  {
    absl::MutexLock lock(&watch_mu);
    res->lockd_watch = CompareWithHistory(want, watched, end_revision);
  }
  res->node_watch =
      CompareWithHistory(want_node, node_report.events, end_revision);

  // The lock key in the history: the holder's put, untouched until the
  // release.
  for (const mvccpb::Event& e : *history) {
    if (e.kv().key() != kLockKey) continue;
    if (e.kv().mod_revision() < lock_state.acquired_revision) continue;
    if (e.type() == mvccpb::Event::PUT &&
        e.kv().mod_revision() == lock_state.acquired_revision) {
      continue;
    }
    if (e.type() == mvccpb::Event::DELETE) break;  // the release
    lock_state.Violation(
        absl::StrCat("the lock key changed hands: ", EventLine(e)));
  }

  // No acknowledged write is lost.
  for (Tally* t : {&lockd_tally, &etcdctl_tally, &node_report.tally}) {
    absl::MutexLock lock(&t->mu);
    for (const auto& [key, value] : t->acked) {
      etcdserverpb::RangeRequest get;
      get.set_key(key);
      absl::StatusOr<etcdserverpb::RangeResponse> r = (*reader)->Range(get);
      if (!r.ok() || r->kvs_size() != 1 || r->kvs(0).value() != value) {
        res->lost_writes.push_back(key);
      }
    }
  }
  {
    absl::MutexLock lock(&lock_state.mu);
    res->lock_violations = lock_state.violations;
  }

  res->rows.push_back(Row("lockd client: put/get", &lockd_tally));
  res->rows.push_back(Row("lockd client: lock+lease", &lock_tally));
  res->rows.back().longest_what += absl::StrCat(
      "; longest keep-alive gap ",
      absl::FormatDuration(res->longest_renewal_gap), ", the contender's ",
      absl::FormatDuration(res->contender_longest_gap));
  ClientRow watch_row;
  watch_row.client = "lockd client: watch";
  watch_row.watch = absl::StrCat(WatchSummary(res->lockd_watch), " (",
                                 res->lockd_watch_streams, " streams)");
  res->rows.push_back(watch_row);
  res->rows.push_back(Row("etcdctl (static list)", &etcdctl_tally));
  res->rows.push_back(Row("node etcd3 (static list)", &node_report.tally));
  res->rows.back().watch = WatchSummary(res->node_watch) +
                           (node_report.done ? "" : ", never reached the end");
  std::printf("[%s] node watch: %s\n", sys->name(),
              absl::StrJoin(node_report.notes, "\n  ").c_str());
  if (!res->node_watch.exact() || !node_report.done) {
    std::printf("[%s] node output tail:\n%s\n", sys->name(),
                node_report.raw_tail.c_str());
  }
}

void Print(const RunResult& r) {
  std::printf("\n--- %s: membership changes\n%s", r.system.c_str(),
              r.log.c_str());
  std::printf("\n=== %s ===\n", r.system.c_str());
  for (const ClientRow& row : r.rows) {
    if (!row.watch.empty() && row.calls == 0) {
      std::printf("  %-28s %s\n", row.client.c_str(), row.watch.c_str());
      continue;
    }
    std::printf("  %-28s %6lld calls, %4zu failed, longest %s (%s)%s%s\n",
                row.client.c_str(), static_cast<long long>(row.calls),
                row.failed, absl::FormatDuration(row.longest).c_str(),
                row.longest_what.c_str(),
                row.watch.empty() ? "" : "\n      watch: ", row.watch.c_str());
    if (row.failed > 0) {
      std::printf("    first failures: %s\n", row.first_failures.c_str());
    }
  }
  std::printf("  lock: %zu violations; keep-alive ended: %s\n",
              r.lock_violations.size(), r.keepalive_end.ToString().c_str());
  for (const std::string& v : r.lock_violations) {
    std::printf("    %s\n", v.c_str());
  }
  std::printf("  lost acknowledged writes: %zu\n", r.lost_writes.size());
  for (const std::string& n : r.notes) {
    std::printf("  note: %s\n", n.substr(0, 600).c_str());
  }
  std::fflush(stdout);
}

void PrintSideBySide(const RunResult& a, const RunResult& b) {
  std::printf("\n%-28s | %-40s | %-40s\n", "client", a.system.c_str(),
              b.system.c_str());
  std::printf("%s\n", std::string(114, '-').c_str());
  for (size_t i = 0; i < std::min(a.rows.size(), b.rows.size()); ++i) {
    auto cell = [](const ClientRow& r) {
      if (!r.watch.empty() && r.calls == 0) return r.watch;
      return absl::StrCat(r.failed, "/", r.calls, " failed, longest ",
                          absl::FormatDuration(r.longest));
    };
    std::printf("%-28s | %-40s | %-40s\n", a.rows[i].client.c_str(),
                cell(a.rows[i]).c_str(), cell(b.rows[i]).c_str());
    if (!a.rows[i].watch.empty() && a.rows[i].calls != 0) {
      std::printf("%-28s | %-40s | %-40s\n", "  its watch",
                  a.rows[i].watch.c_str(), b.rows[i].watch.c_str());
    }
  }
  std::printf("%-28s | %-40zu | %-40zu\n", "lock violations",
              a.lock_violations.size(), b.lock_violations.size());
  std::printf("%-28s | %-40zu | %-40zu\n", "lost acknowledged writes",
              a.lost_writes.size(), b.lost_writes.size());
  std::fflush(stdout);
}

// The assertions on lockd.
void ExpectNothingNoticed(const RunResult& r) {
  for (const ClientRow& row : r.rows) {
    EXPECT_EQ(row.failed, 0u) << row.client << ": " << row.first_failures;
    EXPECT_LT(row.longest, kCallTimeout)
        << row.client << " waited until its deadline: " << row.longest_what;
  }
  EXPECT_TRUE(r.lockd_watch.exact())
      << "lockd watch: " << WatchSummary(r.lockd_watch) << "; "
      << r.lockd_watch.first_difference;
  EXPECT_TRUE(r.node_watch.exact())
      << "node watch: " << WatchSummary(r.node_watch) << "; "
      << r.node_watch.first_difference;
  EXPECT_TRUE(r.node_done);
  EXPECT_TRUE(r.keepalive_end.ok()) << r.keepalive_end;
  EXPECT_TRUE(r.lock_violations.empty())
      << absl::StrJoin(r.lock_violations, "\n");
  EXPECT_TRUE(r.lost_writes.empty()) << r.lost_writes.front();
}

void ExpectNodeInstalled() {
  const std::string script = NodeScript();
  const std::string dir = script.substr(0, script.rfind('/'));
  ASSERT_EQ(access((dir + "/node_modules/etcd3/package.json").c_str(), R_OK), 0)
      << "the npm etcd3 client is not installed in " << dir
      << "/node_modules: run scripts/setup.sh (it runs npm ci there)";
}

TEST(ReconfigTest, ThreeToFiveToThree_EveryClientUnaware) {
  ExpectNodeInstalled();
  System sys(false, "reconfig");
  RunResult r;
  RunScenario(&sys, Scenario{{5, 3}, false}, &r);
  Print(r);
  EXPECT_TRUE(r.completed);
  ExpectNothingNoticed(r);
}

TEST(ReconfigTest, MemberPausedDuringTheShrink_EveryClientUnaware) {
  ExpectNodeInstalled();
  System sys(false, "reconfig-pause");
  RunResult r;
  // A member added by the growth is paused while the first member and the
  // leader are removed.
  RunScenario(
      &sys,
      Scenario{LongRun() ? std::vector<int>{5, 9, 3} : std::vector<int>{5, 3},
               true},
      &r);
  Print(r);
  EXPECT_TRUE(r.completed);
  ExpectNothingNoticed(r);
}

// The full scenario, and the same against etcd 3.4, side by side. Long:
// LOCKD_TEST_LONG=1 (scripts/test.sh --long).
TEST(ReconfigTest, Full_3_5_9_3_SideBySideWithEtcd) {
  if (!LongRun()) GTEST_SKIP() << "set LOCKD_TEST_LONG=1 (test.sh --long)";
  ExpectNodeInstalled();
  RunResult lockd_result, etcd_result;
  {
    System sys(false, "reconfig-full");
    RunScenario(&sys, Scenario{{5, 9, 3}, false}, &lockd_result);
    Print(lockd_result);
  }
  {
    System sys(true, "reconfig-etcd");
    RunScenario(&sys, Scenario{{5, 9, 3}, false}, &etcd_result);
    Print(etcd_result);
  }
  PrintSideBySide(lockd_result, etcd_result);
  EXPECT_TRUE(lockd_result.completed);
  ExpectNothingNoticed(lockd_result);
}

}  // namespace
}  // namespace lockd::testing
