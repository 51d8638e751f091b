// Lock safety under faults, with real processes: lock_worker processes
// contend for one lock on a 3-member cluster (the v3lock Lock RPC through
// lockd's client) and write to a shared resource with their fencing tokens
// through the guarded write, while members are killed (SIGKILL) and
// restarted and a holder is paused (SIGSTOP) past its lease TTL, then
// resumed. Afterwards the cluster's own history (a watch replayed from
// revision 1) is checked against the workers' reports:
// - every grant was made to the oldest live key (the holder) at the
//   revision it was granted at, on a key of the granted lease (never on an
//   expired lease: a lease's keys are deleted in the revision it ends);
// - tokens strictly increase across grants in revision order;
// - every accepted resource write carried the holder's token at its
//   revision, and tokens of accepted writes never go backwards (no write
//   with a superseded token was accepted);
// - writes the workers saw refused left no trace, and the paused holder's
//   write after waking was refused.
//
// Bounded in CI (about a minute of faults); LOCKD_TEST_LONG=1 (set by
// `scripts/test.sh --long`) runs ten minutes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "lockd/client/client.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

constexpr char kLock[] = "safety";
constexpr int kWorkers = 6;
constexpr int64_t kTtlS = 4;

bool LongRun() {
  const char* v = std::getenv("LOCKD_TEST_LONG");
  return v != nullptr && std::string(v) == "1";
}

// One parsed report line of a worker.
struct Line {
  std::string kind;
  std::vector<std::string> fields;
};

// Complete report lines only (the output may end mid-line), with at least
// the fields each kind carries; anything else (gRPC's logs) is skipped.
std::vector<Line> Lines(const std::string& output) {
  static const std::map<std::string, size_t> kFields = {{"GRANT", 4},
                                                        {"WRITE", 3},
                                                        {"REJECTED", 2},
                                                        {"UNKNOWN", 2},
                                                        {"RELEASE", 1}};
  std::vector<Line> out;
  const std::string complete = output.substr(0, output.rfind('\n') + 1);
  for (absl::string_view l :
       absl::StrSplit(complete, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(l, ' ');
    auto want = kFields.find(f[0]);
    if (want == kFields.end() || f.size() < want->second + 1) continue;
    Line line;
    line.kind = f[0];
    line.fields.assign(f.begin() + 1, f.end());
    out.push_back(std::move(line));
  }
  return out;
}

int64_t Num(const std::string& s) {
  int64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(s, &v)) << s;
  return v;
}

struct Grant {
  int worker = 0;
  int64_t token = 0;
  int64_t lease = 0;
  int64_t revision = 0;
  std::string key;
};

// The history of every key starting with kLock, replayed by a watch from
// revision 1 up to the revision of `end_key`'s put.
std::vector<mvccpb::Event> History(const std::string& endpoint,
                                   const std::string& end_key) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(INT32_MAX);
  auto channel = grpc::CreateCustomChannel(
      endpoint, grpc::InsecureChannelCredentials(), args);
  auto stub = etcdserverpb::Watch::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = stub->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  auto* create = req.mutable_create_request();
  create->set_key(kLock);
  std::string end = kLock;
  end.back()++;
  create->set_range_end(end);
  create->set_start_revision(1);
  create->set_prev_kv(true);
  EXPECT_TRUE(stream->Write(req));
  std::vector<mvccpb::Event> events;
  etcdserverpb::WatchResponse resp;
  bool done = false;
  while (!done && stream->Read(&resp)) {
    EXPECT_FALSE(resp.canceled()) << resp.cancel_reason();
    for (const mvccpb::Event& e : resp.events()) {
      events.push_back(e);
      if (e.kv().key() == end_key) done = true;
    }
  }
  EXPECT_TRUE(done) << "the history did not reach " << end_key;
  ctx.TryCancel();
  (void)stream->Finish();
  return events;
}

class LockSafetyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<LocalCluster>(3, "safety");
    ASSERT_TRUE(cluster_->StartAll().ok());
    ASSERT_NE(cluster_->WaitForLeader(absl::Seconds(30)), 0u);
    client::ClientOptions options;
    for (int i = 0; i < 3; ++i) {
      options.endpoints.push_back(cluster_->member(i).endpoint());
    }
    options.call_timeout = absl::Seconds(10);
    auto c = client::Client::Create(options);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }

  // Kills (SIGKILL) a random member every few seconds and restarts it once
  // the others have a leader, until `stop`. Counts kills.
  void Faults(std::atomic<bool>* stop, int* kills) {
    std::mt19937 rng(std::random_device{}());
    while (!stop->load()) {
      // Pauses between faults only shape the schedule.
      absl::SleepFor(absl::Milliseconds(2000 + rng() % 3000));
      if (stop->load()) break;
      const int victim = static_cast<int>(rng() % 3);
      cluster_->process(victim).Signal(SIGKILL);
      ASSERT_TRUE(cluster_->process(victim).Wait(absl::Seconds(30)).ok());
      ++*kills;
      EXPECT_NE(cluster_->WaitForLeader(absl::Seconds(30)), 0u)
          << "no leader after killing member " << victim;
      absl::SleepFor(absl::Milliseconds(500 + rng() % 2000));
      absl::Status s = cluster_->StartMember(victim);
      ASSERT_TRUE(s.ok()) << s;
    }
  }

  // Polls `cond` until true or `timeout`.
  template <typename Cond>
  static bool Eventually(Cond cond, absl::Duration timeout) {
    const absl::Time until = absl::Now() + timeout;
    while (absl::Now() < until) {
      if (cond()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return cond();
  }

  // TTL of `lease` as the leader sees it (-1 once it is gone); retried
  // while a member is down.
  int64_t LeaseTtl(int64_t lease) {
    etcdserverpb::LeaseTimeToLiveRequest req;
    req.set_id(lease);
    auto resp = client_->LeaseTimeToLive(req);
    return resp.ok() ? resp->ttl() : 0;
  }

  // Create revision of `key` (0 if absent), read linearizably.
  int64_t CreateRevision(const std::string& key) {
    etcdserverpb::RangeRequest req;
    req.set_key(key);
    auto resp = client_->Range(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() && resp->kvs_size() > 0 ? resp->kvs(0).create_revision()
                                             : 0;
  }

  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(LockSafetyTest, FencedWritesUnderKillsAndAPausedHolder) {
  const int64_t run_for_s = LongRun() ? 600 : 60;
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.push_back(std::make_unique<Subprocess>());
    ASSERT_TRUE(
        workers.back()
            ->Start({Runfile("tests/integration/lock_worker"),
                     "--endpoints=" + cluster_->endpoints(),
                     std::string("--name=") + kLock, absl::StrCat("--id=w", w),
                     absl::StrCat("--run-for-s=", run_for_s),
                     absl::StrCat("--ttl-s=", kTtlS)})
            .ok());
  }
  for (auto& w : workers) {
    ASSERT_TRUE(w->WaitForOutput("READY", absl::Seconds(30))) << w->output();
  }
  std::atomic<bool> stop_faults{false};
  int kills = 0;
  std::thread faults([&] { Faults(&stop_faults, &kills); });

  // Pause holders past their TTL until one pause catches a holder before
  // its last write (a pause may land after it); a long run keeps pausing
  // holders until shortly before the workers stop.
  struct Paused {
    int worker;
    int64_t token;
  };
  std::vector<Paused> caught;
  const absl::Time pauses_until =
      absl::Now() + absl::Seconds(run_for_s) - absl::Seconds(15);
  int attempts = 0;
  const int attempts_max = LongRun() ? 100 : 5;
  while ((caught.empty() || LongRun()) && attempts < attempts_max &&
         absl::Now() < pauses_until) {
    ++attempts;
    // The newest grant not yet released, of any worker.
    int worker = -1;
    Grant g;
    ASSERT_TRUE(Eventually(
        [&] {
          for (int w = 0; w < kWorkers; ++w) {
            std::vector<Line> lines = Lines(workers[w]->output());
            for (size_t i = 0; i < lines.size(); ++i) {
              if (lines[i].kind != "GRANT") continue;
              bool open = true;
              for (size_t j = i + 1; j < lines.size(); ++j) {
                open &= lines[j].kind != "RELEASE";
              }
              const int64_t token = Num(lines[i].fields[0]);
              if (open && token > g.token) {
                worker = w;
                g.token = token;
                g.lease = Num(lines[i].fields[1]);
                g.key = lines[i].fields[3];
              }
            }
          }
          return worker >= 0;
        },
        absl::Seconds(30)))
        << "no worker holds the lock";
    workers[worker]->Signal(SIGSTOP);
    // Whether the pause caught it holding, before its last write, is
    // judged by the cluster (its reports may still be in the pipe): its
    // key still holds the lock while it is stopped...
    bool missed = CreateRevision(g.key) != g.token;
    // ...its lease then runs out while it sleeps (its keep-alive sleeps
    // too)...
    ASSERT_TRUE(
        Eventually([&] { return LeaseTtl(g.lease) == -1; }, absl::Seconds(60)))
        << "the paused worker's lease did not expire";
    // ...and its last write was not applied before that (a write sent just
    // before the pause is applied by now, or refused by the guard).
    missed = missed || CreateRevision(absl::StrCat(kLock, "-res/log/", g.token,
                                                   "/w", worker, "/2")) != 0;
    if (!missed) {
      // Another worker takes the lock with a larger token and writes.
      EXPECT_TRUE(Eventually(
          [&] {
            for (int w = 0; w < kWorkers; ++w) {
              if (w == worker) continue;
              for (const Line& l : Lines(workers[w]->output())) {
                if (l.kind == "WRITE" && Num(l.fields[0]) > g.token) {
                  return true;
                }
              }
            }
            return false;
          },
          absl::Seconds(60)))
          << "nobody took the lock after the paused holder's lease ended";
    }
    workers[worker]->Signal(SIGCONT);
    if (!missed) {
      // Its next write, after waking, is refused.
      EXPECT_TRUE(workers[worker]->WaitForOutput(
          absl::StrCat("REJECTED ", g.token, " "), absl::Seconds(60)))
          << workers[worker]->output();
      caught.push_back({worker, g.token});
    }
  }
  EXPECT_FALSE(caught.empty()) << "no pause caught a holder before its last "
                                  "write in "
                               << attempts << " attempts";

  for (auto& w : workers) {
    absl::StatusOr<int> rc = w->Wait(absl::Seconds(run_for_s + 120));
    ASSERT_TRUE(rc.ok()) << "worker did not finish: " << w->output();
    EXPECT_EQ(*rc, 0) << w->output();
  }
  stop_faults = true;
  faults.join();
  EXPECT_GT(kills, 0);
  // Every member up for the history read.
  for (int i = 0; i < 3; ++i) {
    if (!cluster_->process(i).running()) {
      ASSERT_TRUE(cluster_->StartMember(i).ok());
    }
  }
  ASSERT_NE(cluster_->WaitForLeader(absl::Seconds(30)), 0u);

  // The workers' reports.
  std::vector<Grant> grants;
  // Records "token writer seq": applied at the revision the worker was
  // told, and refused on every attempt (a write whose first attempt had no
  // answer may have been applied then, before the retry was refused).
  std::set<std::pair<std::string, int64_t>> accepted;
  std::set<std::string> rejected, unknown;
  for (int w = 0; w < kWorkers; ++w) {
    for (const Line& l : Lines(workers[w]->output())) {
      const std::string record =
          l.fields.size() >= 2
              ? absl::StrCat(l.fields[0], " w", w, " ", l.fields[1])
              : "";
      if (l.kind == "GRANT") {
        Grant g;
        g.worker = w;
        g.token = Num(l.fields[0]);
        g.lease = Num(l.fields[1]);
        g.revision = Num(l.fields[2]);
        grants.push_back(g);
      } else if (l.kind == "WRITE") {
        accepted.insert({record, Num(l.fields[2])});
      } else if (l.kind == "UNKNOWN") {
        unknown.insert(record);
      } else if (l.kind == "REJECTED" && unknown.count(record) == 0) {
        rejected.insert(record);
      }
    }
  }
  ASSERT_GE(grants.size(), 10u) << "too little progress to judge";

  // The cluster's history, up to a marker written now.
  const std::string end_key = std::string(kLock) + "-zz-end";
  etcdserverpb::PutRequest marker;
  marker.set_key(end_key);
  ASSERT_TRUE(client_->Put(marker).ok());
  std::vector<mvccpb::Event> events =
      History(cluster_->member(0).endpoint(), end_key);

  // Replay: the live lock keys (create revision -> lease), the holder after
  // each revision, and the resource writes.
  const std::string lock_prefix = std::string(kLock) + "/";
  const std::string log_prefix = std::string(kLock) + "-res/log/";
  std::map<int64_t, int64_t> live;  // create revision -> lease
  // revision -> (holder token, holder lease) after that revision.
  std::map<int64_t, std::pair<int64_t, int64_t>> holder_after;
  std::set<std::string> in_history;
  std::set<std::pair<std::string, int64_t>> in_history_at;
  int64_t last_write_token = 0;
  int writes = 0;
  for (size_t i = 0; i < events.size();) {
    const int64_t rev = events[i].kv().mod_revision();
    const auto holder = [&]() -> std::pair<int64_t, int64_t> {
      if (live.empty()) return {0, 0};
      return *live.begin();
    };
    // Resource writes of this revision are judged against the holder
    // before it (a guarded txn does not touch lock keys).
    const std::pair<int64_t, int64_t> before = holder();
    size_t j = i;
    for (; j < events.size() && events[j].kv().mod_revision() == rev; ++j) {
      const mvccpb::Event& e = events[j];
      const std::string& key = e.kv().key();
      if (absl::StartsWith(key, lock_prefix)) {
        if (e.type() == mvccpb::Event::PUT) {
          live[e.kv().create_revision()] = e.kv().lease();
        } else {
          live.erase(e.prev_kv().create_revision());
        }
      } else if (absl::StartsWith(key, log_prefix) &&
                 e.type() == mvccpb::Event::PUT) {
        ++writes;
        const std::string& record = e.kv().value();
        in_history.insert(record);
        in_history_at.insert({record, rev});
        const int64_t token =
            Num(std::string(record.substr(0, record.find(' '))));
        EXPECT_EQ(token, before.first)
            << "write \"" << record << "\" accepted at revision " << rev
            << " while the holder's token was " << before.first;
        EXPECT_GE(token, last_write_token)
            << "write \"" << record << "\" at revision " << rev
            << " carries a token superseded by " << last_write_token;
        last_write_token = std::max(last_write_token, token);
      }
    }
    holder_after[rev] = holder();
    i = j;
  }
  ASSERT_FALSE(holder_after.empty());
  EXPECT_GT(writes, 0);

  // Grants: to the holder, on its lease, tokens increasing.
  std::sort(grants.begin(), grants.end(), [](const Grant& a, const Grant& b) {
    return std::tie(a.revision, a.token) < std::tie(b.revision, b.token);
  });
  int64_t last_token = 0;
  for (const Grant& g : grants) {
    auto it = holder_after.upper_bound(g.revision);
    ASSERT_NE(it, holder_after.begin());
    --it;
    EXPECT_EQ(it->second.first, g.token)
        << "w" << g.worker << " was granted token " << g.token
        << " at revision " << g.revision << " while the holder was "
        << it->second.first;
    EXPECT_EQ(it->second.second, g.lease)
        << "token " << g.token << " granted on lease " << g.lease
        << " but the holding key is on lease " << it->second.second;
    EXPECT_GT(g.token, last_token)
        << "token " << g.token << " granted after token " << last_token;
    last_token = g.token;
  }
  // What the workers saw matches the history.
  for (const auto& [record, rev] : accepted) {
    EXPECT_TRUE(in_history_at.count({record, rev}))
        << "accepted write " << record << " is not in the history at revision "
        << rev;
  }
  for (const std::string& r : rejected) {
    EXPECT_FALSE(in_history.count(r))
        << "refused write " << r << " is in the history";
  }
  std::printf(
      "lock safety: %zu grants, %d writes accepted, %zu refused, %d member "
      "kills, %zu paused holder(s) refused after waking, %zu events\n",
      grants.size(), writes, rejected.size(), kills, caught.size(),
      events.size());
}

}  // namespace
}  // namespace lockd::testing
