// One contender of lock_safety_test: a real process that, until its run
// time is up, takes the lock through lockd's client (a fresh lease kept
// alive, the v3lock Lock RPC), writes to the shared resource with its
// fencing token through the guarded write, and unlocks. It reports every
// step on stdout, one line each, for the test to check against the
// cluster's history:
//   GRANT <token> <lease> <granted_revision> <key>
//   WRITE <token> <seq> <revision>   the guarded write was applied
//   REJECTED <token> <seq>           refused: the lock was lost
//   UNKNOWN <token> <seq> <error>    no answer (a member died mid-call);
//                                    the write is sent again
//   RELEASE <token>
//   LOCKERR <error>                  no grant this round
//   DONE <grants>
// Each guarded write is one txn: the resource value and a log record
// "<prefix>-res/log/<token>/<writer>/<seq>" holding "<token> <writer> <seq>".
// The last write of a holding comes right before Unlock, so a holder
// paused (SIGSTOP) anywhere before it writes after waking.
//
// Usage: lock_worker --endpoints=h:p,... --name=LOCK --id=WRITER
//                    --run-for-s=N --ttl-s=N
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lockd/client/client.h"

namespace {

using lockd::client::Client;

absl::Mutex out_mu;

template <typename... Args>
void Report(const absl::FormatSpec<Args...>& format, const Args&... args) {
  absl::MutexLock lock(&out_mu);
  std::string line = absl::StrFormat(format, args...);
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

// A lease's keep-alive, on its own thread until stopped.
class KeepAlive {
 public:
  KeepAlive(Client* client, int64_t lease) {
    thread_ = std::thread([this, client, lease] {
      (void)client->LeaseKeepAlive(
          lease, [this](const etcdserverpb::LeaseKeepAliveResponse&) {
            return !stop_.load();
          });
    });
  }
  void Stop() { stop_ = true; }
  ~KeepAlive() {
    Stop();
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

int Run(const std::vector<std::string>& endpoints, const std::string& name,
        const std::string& id, absl::Duration run_for, int64_t ttl_s) {
  lockd::client::ClientOptions options;
  options.endpoints = endpoints;
  options.call_timeout = absl::Seconds(5);
  auto created = Client::Create(options);
  if (!created.ok()) {
    std::fprintf(stderr, "lock_worker: %s\n",
                 std::string(created.status().message()).c_str());
    return 2;
  }
  Client& client = **created;
  const absl::Time end = absl::Now() + run_for;
  // Stopped keep-alives end at their next renewal; joined at exit.
  std::vector<std::unique_ptr<KeepAlive>> keep_alives;
  int grants = 0;
  constexpr int kWrites = 3;
  Report("READY");
  while (absl::Now() < end) {
    etcdserverpb::LeaseGrantRequest grant;
    grant.set_ttl(ttl_s);
    auto lease = client.LeaseGrant(grant);
    if (!lease.ok()) {
      Report("LOCKERR lease grant: %s", std::string(lease.status().message()));
      absl::SleepFor(absl::Milliseconds(200));
      continue;
    }
    keep_alives.push_back(std::make_unique<KeepAlive>(&client, lease->id()));
    auto held = client.Lock(name, lease->id(), absl::Seconds(20));
    if (!held.ok()) {
      Report("LOCKERR %s", std::string(held.status().message()));
    } else {
      ++grants;
      Report("GRANT %d %d %d %s", held->token, held->lease,
             held->granted_revision, held->key);
      for (int seq = 0; seq < kWrites; ++seq) {
        if (seq > 0) absl::SleepFor(absl::Milliseconds(30));  // the "work"
        etcdserverpb::TxnRequest txn;
        const std::string record = absl::StrCat(held->token, " ", id, " ", seq);
        auto* value = txn.add_success()->mutable_request_put();
        value->set_key(name + "-res/value");
        value->set_value(record);
        auto* log = txn.add_success()->mutable_request_put();
        log->set_key(
            absl::StrCat(name, "-res/log/", held->token, "/", id, "/", seq));
        log->set_value(record);
        // A write whose outcome is unknown (a member died, or the channel
        // broke while this process was stopped) is sent again: the guard
        // makes a late repeat harmless, and the record is the same.
        auto w = client.GuardedTxn(*held, txn);
        for (int retry = 0;
             retry < 3 && !w.ok() && !absl::IsFailedPrecondition(w.status());
             ++retry) {
          Report("UNKNOWN %d %d %s", held->token, seq,
                 std::string(w.status().message()));
          w = client.GuardedTxn(*held, txn);
        }
        if (w.ok()) {
          Report("WRITE %d %d %d", held->token, seq, w->header().revision());
        } else if (absl::IsFailedPrecondition(w.status())) {
          Report("REJECTED %d %d", held->token, seq);
          break;
        } else {
          Report("UNKNOWN %d %d %s", held->token, seq,
                 std::string(w.status().message()));
        }
      }
      absl::Status u = client.Unlock(*held);
      Report("RELEASE %d %s", held->token, u.ok() ? "ok" : u.message());
    }
    keep_alives.back()->Stop();
    etcdserverpb::LeaseRevokeRequest revoke;
    revoke.set_id(lease->id());
    (void)client.LeaseRevoke(revoke);  // best effort: it expires anyway
  }
  keep_alives.clear();
  Report("DONE %d", grants);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> endpoints;
  std::string name, id;
  int64_t run_for_s = 0, ttl_s = 0;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::vector<std::string> kv = absl::StrSplit(arg, absl::MaxSplits('=', 1));
    if (kv.size() != 2) {
      std::fprintf(stderr, "lock_worker: bad argument %s\n", argv[i]);
      return 2;
    }
    if (kv[0] == "--endpoints") {
      endpoints = absl::StrSplit(kv[1], ',', absl::SkipEmpty());
    } else if (kv[0] == "--name") {
      name = kv[1];
    } else if (kv[0] == "--id") {
      id = kv[1];
    } else if (kv[0] == "--run-for-s") {
      if (!absl::SimpleAtoi(kv[1], &run_for_s)) return 2;
    } else if (kv[0] == "--ttl-s") {
      if (!absl::SimpleAtoi(kv[1], &ttl_s)) return 2;
    } else {
      std::fprintf(stderr, "lock_worker: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (endpoints.empty() || name.empty() || id.empty() || run_for_s <= 0 ||
      ttl_s <= 0) {
    std::fprintf(stderr,
                 "usage: lock_worker --endpoints=h:p,... --name=LOCK "
                 "--id=WRITER --run-for-s=N --ttl-s=N\n");
    return 2;
  }
  return Run(endpoints, name, id, absl::Seconds(run_for_s), ttl_s);
}
