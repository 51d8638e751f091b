// Watches on a real 3-member lockd cluster, driven by Debian's etcdctl, by
// lockctl and by a plain gRPC client: under a random put/delete/txn load with
// a member restart and a compaction, every watcher sees exactly the committed
// history (checked against Range at revisions), resuming after its member
// restarts from the revision after the last one it got.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// A long-running watch command (etcdctl or lockctl) with its output.
std::unique_ptr<Subprocess> StartWatch(bool lockctl,
                                       const std::string& endpoints,
                                       const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  if (lockctl) {
    argv = {Runfile("lockd/lockctl"), "--endpoints=" + endpoints, "watch"};
  } else {
    argv = {"/usr/bin/etcdctl", "--endpoints=" + endpoints, "watch"};
    env = {"ETCDCTL_API=3"};
  }
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = std::make_unique<Subprocess>();
  EXPECT_TRUE(p->Start(argv, env).ok());
  return p;
}

// A watcher over the raw gRPC API that reconnects to its endpoint and
// resumes from the revision after the last event it received.
class Collector {
 public:
  struct Received {
    mvccpb::Event event;
    int response;  // which response carried it
  };

  Collector(std::string endpoint, std::string key, std::string range_end,
            int64_t start_revision)
      : endpoint_(std::move(endpoint)),
        key_(std::move(key)),
        range_end_(std::move(range_end)),
        next_revision_(start_revision) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Collector() { Stop(); }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
      if (ctx_ != nullptr) ctx_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }

  // Waits until an event at `revision` or later arrived.
  bool WaitFor(int64_t revision, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return next_revision_ > revision;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

  std::vector<Received> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  int resumes() {
    absl::MutexLock lock(&mu_);
    return resumes_;
  }
  std::string errors() {
    absl::MutexLock lock(&mu_);
    return errors_;
  }

 private:
  void Run() {
    for (int attempt = 0;; ++attempt) {
      auto channel =
          grpc::CreateChannel(endpoint_, grpc::InsecureChannelCredentials());
      auto stub = etcdserverpb::Watch::NewStub(channel);
      grpc::ClientContext ctx;
      etcdserverpb::WatchRequest req;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        ctx_ = &ctx;
        if (attempt > 0) ++resumes_;
        auto* c = req.mutable_create_request();
        c->set_key(key_);
        c->set_range_end(range_end_);
        c->set_start_revision(next_revision_);
      }
      auto stream = stub->Watch(&ctx);
      if (stream->Write(req)) {
        etcdserverpb::WatchResponse r;
        while (stream->Read(&r)) {
          absl::MutexLock lock(&mu_);
          if (r.canceled()) {
            absl::StrAppend(&errors_, "canceled: ", r.cancel_reason(),
                            " compact ", r.compact_revision(), "\n");
            continue;
          }
          ++responses_;
          for (const mvccpb::Event& ev : r.events()) {
            if (ev.kv().mod_revision() < next_revision_ - 1 ||
                (!events_.empty() &&
                 ev.kv().mod_revision() <
                     events_.back().event.kv().mod_revision())) {
              absl::StrAppend(&errors_, "out of order at ",
                              ev.kv().mod_revision(), "\n");
            }
            events_.push_back({ev, responses_});
            next_revision_ = ev.kv().mod_revision() + 1;
          }
        }
      }
      stream->Finish();
      {
        absl::MutexLock lock(&mu_);
        ctx_ = nullptr;
        if (stop_) return;
      }
      // The member is away (restarting): try again shortly.
      channel->WaitForConnected(
          absl::ToChronoTime(absl::Now() + absl::Milliseconds(200)));
    }
  }

  const std::string endpoint_, key_, range_end_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t next_revision_ ABSL_GUARDED_BY(mu_);
  int responses_ ABSL_GUARDED_BY(mu_) = 0;
  int resumes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Received> events_ ABSL_GUARDED_BY(mu_);
  std::string errors_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

using State = std::map<std::string, mvccpb::KeyValue>;

// What etcdctl prints for these events (with --prev-kv), replaying them on
// `state` (the keys' values just before the first event).
std::string EtcdctlText(const std::vector<mvccpb::Event>& events, State state,
                        bool prev_kv) {
  std::string out;
  for (const mvccpb::Event& ev : events) {
    const std::string& k = ev.kv().key();
    out += ev.type() == mvccpb::Event::DELETE ? "DELETE\n" : "PUT\n";
    auto it = state.find(k);
    if (prev_kv && it != state.end()) {
      absl::StrAppend(&out, k, "\n", it->second.value(), "\n");
    }
    absl::StrAppend(&out, k, "\n", ev.kv().value(), "\n");
    if (ev.type() == mvccpb::Event::DELETE) {
      state.erase(k);
    } else {
      state[k] = ev.kv();
    }
  }
  return out;
}

State RangeAt(etcdserverpb::KV::Stub* kv, const std::string& key,
              const std::string& end, int64_t revision) {
  etcdserverpb::RangeRequest req;
  req.set_key(key);
  req.set_range_end(end);
  req.set_revision(revision);
  etcdserverpb::RangeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::Status st = kv->Range(&ctx, req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message() << " at " << revision;
  State s;
  for (const auto& kv : resp.kvs()) s[kv.key()] = kv;
  return s;
}

TEST(WatchTest, Etcdctl_PrefixRevPrevKvAndCompaction) {
  LocalCluster cluster(3, "watchctl");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string all = cluster.endpoints();
  ASSERT_EQ(Etcdctl(all, {"put", "w/a", "1"}).exit_code, 0);  // rev 2
  ASSERT_EQ(Etcdctl(all, {"put", "w/a", "2"}).exit_code, 0);  // rev 3
  ASSERT_EQ(Etcdctl(all, {"put", "x", "0"}).exit_code, 0);    // rev 4
  ASSERT_EQ(Etcdctl(all, {"del", "w/a"}).exit_code, 0);       // rev 5
  const std::string want =
      "PUT\nw/a\n1\nPUT\nw/a\n1\nw/a\n2\nDELETE\nw/a\n2\nw/a\n\n"
      "PUT\nw/b\nlive\n";
  // Replay from revision 1 with prev-kv, then a live event, on each member
  // (every member serves watches from its own applied state).
  for (int i = 0; i < 3; ++i) {
    for (bool lockctl : {false, true}) {
      auto w = StartWatch(lockctl, cluster.member(i).endpoint(),
                          {"--prefix", "w/", "--rev", "1", "--prev-kv"});
      ASSERT_TRUE(
          w->WaitForOutput("DELETE\nw/a\n2\nw/a\n\n", absl::Seconds(20)))
          << (lockctl ? "lockctl" : "etcdctl") << " on member " << i << ": "
          << w->output();
      ASSERT_EQ(Etcdctl(all, {"put", "w/b", "live"}).exit_code, 0);
      ASSERT_TRUE(w->WaitForOutput("w/b\nlive\n", absl::Seconds(20)))
          << w->output();
      EXPECT_EQ(w->output().substr(0, want.size()), want)
          << (lockctl ? "lockctl" : "etcdctl") << " on member " << i;
      w->Stop();
      ASSERT_EQ(Etcdctl(all, {"del", "w/b"}).exit_code, 0);
    }
  }
  // A single key from a revision; json output carries the header.
  ASSERT_EQ(Etcdctl(all, {"put", "w/c", "j"}).exit_code, 0);
  auto jw = StartWatch(true, all, {"-w", "json", "w/c", "--rev", "2"});
  ASSERT_TRUE(jw->WaitForOutput("\"cluster_id\"", absl::Seconds(20)))
      << jw->output();
  jw->Stop();

  ASSERT_EQ(Etcdctl(all, {"compaction", "4"}).exit_code, 0);
  // A member serves watches from what it has applied: wait until member 0
  // has applied the compaction.
  const std::string m0 = cluster.member(0).endpoint();
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (Etcdctl(m0, {"get", "w/a", "--rev=2", "--consistency=s"})
                 .err.find("compacted") == std::string::npos &&
         absl::Now() < deadline) {
  }
  for (bool lockctl : {false, true}) {
    auto w = StartWatch(lockctl, m0, {"--prefix", "w/", "--rev", "2"});
    absl::StatusOr<int> code = w->Wait(absl::Seconds(20));
    ASSERT_TRUE(code.ok());
    EXPECT_NE(*code, 0);
    EXPECT_NE(w->output().find("required revision has been compacted"),
              std::string::npos)
        << w->output();
  }
  // At the compaction revision itself history is still readable.
  auto at = StartWatch(false, m0, {"--prefix", "w/", "--rev", "4"});
  EXPECT_TRUE(at->WaitForOutput("DELETE\nw/a\n\n", absl::Seconds(20)))
      << at->output();
  at->Stop();
}

TEST(WatchTest, RandomLoad_RestartAndCompaction_ExactlyCommittedHistory) {
  LocalCluster cluster(3, "watchload");
  {
    absl::Status started = cluster.StartAll();
    ASSERT_TRUE(started.ok()) << started;
  }
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  const std::string prefix = "p/", prefix_end = "p0";
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> kv;
  for (int i = 0; i < 3; ++i) {
    kv.push_back(etcdserverpb::KV::NewStub(grpc::CreateChannel(
        cluster.member(i).endpoint(), grpc::InsecureChannelCredentials())));
  }
  // B: from revision 1 on member 2 (never restarted), the reference.
  Collector b(cluster.member(2).endpoint(), prefix, prefix_end, 1);
  // A: on member 0, which is restarted mid-way.
  Collector a(cluster.member(0).endpoint(), prefix, prefix_end, 1);
  // etcdctl on member 1 and lockctl on member 0 (it resumes there).
  auto ctl = StartWatch(false, cluster.member(1).endpoint(),
                        {"--prefix", prefix, "--rev", "1", "--prev-kv"});
  auto lctl = StartWatch(true, cluster.member(0).endpoint(),
                         {"--prefix", prefix, "--rev", "1", "--prev-kv"});

  std::atomic<bool> member0_down{false};
  std::mt19937 rng(20261123);
  auto write = [&](int phase_ops) {
    for (int i = 0; i < phase_ops; ++i) {
      int m = rng() % 3;
      if (m == 0 && member0_down.load()) m = 1;
      std::string k = absl::StrCat(prefix, rng() % 12);
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      grpc::Status st;
      switch (rng() % 5) {
        case 0: {
          etcdserverpb::DeleteRangeRequest req;
          req.set_key(k);
          if (rng() % 4 == 0) req.set_range_end(absl::StrCat(k, "\xff"));
          etcdserverpb::DeleteRangeResponse resp;
          st = kv[m]->DeleteRange(&ctx, req, &resp);
          break;
        }
        case 1: {
          // Several keys in one revision (a txn), plus one outside.
          etcdserverpb::TxnRequest req;
          for (int j = 0; j < 3; ++j) {
            auto* put = req.add_success()->mutable_request_put();
            put->set_key(absl::StrCat(prefix, "t", j));
            put->set_value(absl::StrCat("txn", i));
          }
          req.add_success()->mutable_request_delete_range()->set_key(k);
          req.add_success()->mutable_request_put()->set_key("outside");
          etcdserverpb::TxnResponse resp;
          st = kv[m]->Txn(&ctx, req, &resp);
          break;
        }
        default: {
          etcdserverpb::PutRequest req;
          req.set_key(rng() % 6 == 0 ? "q/other" : k);
          req.set_value(absl::StrCat("v", i, "-", rng() % 1000));
          etcdserverpb::PutResponse resp;
          st = kv[m]->Put(&ctx, req, &resp);
        }
      }
      // A failed write may or may not have committed; the watchers are
      // compared with the committed history, not with what was sent.
      (void)st;
    }
  };

  write(150);
  // Restart member 0 under load.
  std::thread restart([&] {
    member0_down = true;
    cluster.StopMember(0);
    EXPECT_TRUE(cluster.StartMember(0).ok());
    member0_down = false;
  });
  write(150);
  restart.join();
  write(100);

  // Compact below what everyone has seen, physically, then go on.
  etcdserverpb::RangeRequest rr;
  rr.set_key("none");
  etcdserverpb::RangeResponse rresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(kv[1]->Range(&ctx, rr, &rresp).ok());
  }
  const int64_t mid = rresp.header().revision();
  ASSERT_TRUE(a.WaitFor(mid, absl::Seconds(30)));
  ASSERT_TRUE(b.WaitFor(mid, absl::Seconds(30)));
  const int64_t compact = mid - 20;
  {
    grpc::ClientContext ctx;
    etcdserverpb::CompactionRequest req;
    req.set_revision(compact);
    req.set_physical(true);
    etcdserverpb::CompactionResponse resp;
    ASSERT_TRUE(kv[1]->Compact(&ctx, req, &resp).ok());
  }
  write(150);
  // A last, known write marks the end.
  int64_t last;
  {
    grpc::ClientContext ctx;
    etcdserverpb::PutRequest req;
    req.set_key("p/final");
    req.set_value("done");
    etcdserverpb::PutResponse resp;
    ASSERT_TRUE(kv[1]->Put(&ctx, req, &resp).ok());
    last = resp.header().revision();
  }
  ASSERT_TRUE(a.WaitFor(last, absl::Seconds(30))) << a.errors();
  ASSERT_TRUE(b.WaitFor(last, absl::Seconds(30))) << b.errors();
  a.Stop();
  b.Stop();
  EXPECT_EQ(a.errors(), "");
  EXPECT_EQ(b.errors(), "");
  EXPECT_GE(a.resumes(), 1);

  std::vector<mvccpb::Event> ref;
  for (const auto& r : b.events()) ref.push_back(r.event);
  std::vector<mvccpb::Event> got;
  for (const auto& r : a.events()) got.push_back(r.event);
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(got[i].SerializeAsString(), ref[i].SerializeAsString())
        << "event " << i;
  }
  // The events of one revision came in one response.
  std::map<int64_t, int> response_of;
  for (const auto& r : b.events()) {
    auto [it, fresh] =
        response_of.emplace(r.event.kv().mod_revision(), r.response);
    EXPECT_EQ(it->second, r.response) << "revision split across responses";
  }

  // The reference itself is the committed history: replaying it gives what
  // Range reads at every revision from the compaction point on.
  State state;
  size_t next = 0;
  for (int64_t rev = 1; rev <= last; ++rev) {
    while (next < ref.size() && ref[next].kv().mod_revision() == rev) {
      const mvccpb::Event& ev = ref[next++];
      if (ev.type() == mvccpb::Event::DELETE) {
        state.erase(ev.kv().key());
      } else {
        state[ev.kv().key()] = ev.kv();
      }
    }
    if (rev < compact || (rev % 7 != 0 && rev != compact && rev != last)) {
      continue;
    }
    State read = RangeAt(kv[rev % 3].get(), prefix, prefix_end, rev);
    ASSERT_EQ(read.size(), state.size()) << "at revision " << rev;
    for (const auto& [k, v] : state) {
      ASSERT_EQ(read[k].SerializeAsString(), v.SerializeAsString())
          << k << " at revision " << rev;
    }
  }

  // etcdctl and lockctl printed exactly that history.
  const std::string text = EtcdctlText(ref, {}, true);
  for (auto* p : {ctl.get(), lctl.get()}) {
    ASSERT_TRUE(p->WaitForOutput("p/final\ndone\n", absl::Seconds(30)))
        << p->output().substr(0, 2000);
  }
  ctl->Stop();
  lctl->Stop();
  EXPECT_EQ(ctl->output(), text);
  // lockctl notes its resume on stderr (captured together); the events
  // are the same.
  std::string lout;
  for (absl::string_view line : absl::StrSplit(lctl->output(), '\n')) {
    if (absl::StartsWith(line, "watch stream on") ||
        absl::StartsWith(line, "cannot reach")) {
      continue;
    }
    absl::StrAppend(&lout, line, "\n");
  }
  EXPECT_EQ(lout.substr(0, lout.size() - 1), text);
}

// A txn whose events (with prev_kv) exceed --max-request-bytes plus gRPC's
// allowance arrives in fragments to a watcher that asked for them, and
// whole otherwise; ids the client chooses, etcd's duplicate-id error, cancel
// and progress requests.
TEST(WatchTest, Grpc_FragmentsIdsCancelProgress) {
  LocalCluster cluster(1, "watchfrag");
  ASSERT_TRUE(cluster.StartMember(0, {"--max-request-bytes=600000"}).ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  auto channel = grpc::CreateChannel(cluster.member(0).endpoint(),
                                     grpc::InsecureChannelCredentials());
  auto kv = etcdserverpb::KV::NewStub(channel);
  auto watch = etcdserverpb::Watch::NewStub(channel);
  const std::string big(290000, 'x');
  for (const char* k : {"f/a", "f/b"}) {
    grpc::ClientContext ctx;
    etcdserverpb::PutRequest req;
    req.set_key(k);
    req.set_value(big);
    etcdserverpb::PutResponse resp;
    ASSERT_TRUE(kv->Put(&ctx, req, &resp).ok());
  }

  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = watch->Watch(&ctx);
  auto create = [&](int64_t id, bool fragment) {
    etcdserverpb::WatchRequest req;
    auto* c = req.mutable_create_request();
    c->set_key("f/");
    c->set_range_end("f0");
    c->set_prev_kv(true);
    c->set_fragment(fragment);
    c->set_watch_id(id);
    return stream->Write(req);
  };
  etcdserverpb::WatchResponse r;
  ASSERT_TRUE(create(7, true));
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_TRUE(r.created());
  EXPECT_EQ(r.watch_id(), 7);
  EXPECT_EQ(r.header().revision(), 3);
  ASSERT_TRUE(create(7, false));
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_TRUE(r.created());
  EXPECT_TRUE(r.canceled());
  EXPECT_EQ(r.watch_id(), -1);
  EXPECT_EQ(r.cancel_reason(),
            "mvcc: duplicate watch ID provided on the WatchStream");
  ASSERT_TRUE(create(0, false));  // auto id: the lowest unused
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.watch_id(), 0);

  {
    grpc::ClientContext tctx;
    etcdserverpb::TxnRequest txn;
    for (const char* k : {"f/a", "f/b"}) {
      auto* put = txn.add_success()->mutable_request_put();
      put->set_key(k);
      put->set_value(big);
    }
    etcdserverpb::TxnResponse resp;
    grpc::Status st = kv->Txn(&tctx, txn, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  std::map<int64_t, std::vector<etcdserverpb::WatchResponse>> got;
  int events = 0;
  while (events < 4 && stream->Read(&r)) {
    events += r.events_size();
    got[r.watch_id()].push_back(r);
  }
  ASSERT_EQ(got[7].size(), 2u);
  EXPECT_TRUE(got[7][0].fragment());
  EXPECT_FALSE(got[7][1].fragment());
  EXPECT_EQ(got[7][0].events_size() + got[7][1].events_size(), 2);
  ASSERT_EQ(got[0].size(), 1u);
  EXPECT_EQ(got[0][0].events_size(), 2);
  EXPECT_EQ(got[0][0].events(1).prev_kv().value(), big);

  // Cancel one; a progress request answers with watch_id -1 at the
  // revision everything was sent up to.
  etcdserverpb::WatchRequest cancel;
  cancel.mutable_cancel_request()->set_watch_id(7);
  ASSERT_TRUE(stream->Write(cancel));
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_TRUE(r.canceled());
  EXPECT_EQ(r.watch_id(), 7);
  etcdserverpb::WatchRequest progress;
  progress.mutable_progress_request();
  ASSERT_TRUE(stream->Write(progress));
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.watch_id(), -1);
  EXPECT_EQ(r.header().revision(), 4);
  EXPECT_EQ(r.events_size(), 0);
  EXPECT_NE(r.header().cluster_id(), 0u);
  EXPECT_NE(r.header().member_id(), 0u);
  EXPECT_GT(r.header().raft_term(), 0u);
  ctx.TryCancel();
}

// One stream carrying many watchers (enough that the server holds its busy
// rounds to batch events, see watch_service.cc): under a stream of puts,
// every watcher still gets every event once, in revision order, and the
// stream ends cleanly when the client closes its side mid-load.
TEST(WatchTest, Grpc_ManyWatchersOneStream_EveryEventOnceInOrder) {
  LocalCluster cluster(1, "watchmany");
  ASSERT_TRUE(cluster.StartMember(0).ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  auto channel = grpc::CreateChannel(cluster.member(0).endpoint(),
                                     grpc::InsecureChannelCredentials());
  auto kv = etcdserverpb::KV::NewStub(channel);
  auto watch = etcdserverpb::Watch::NewStub(channel);
  constexpr int kWatchers = 150;
  constexpr int kPuts = 400;

  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto stream = watch->Watch(&ctx);
  for (int i = 0; i < kWatchers; ++i) {
    etcdserverpb::WatchRequest req;
    req.mutable_create_request()->set_key("m/");
    req.mutable_create_request()->set_range_end("m0");
    ASSERT_TRUE(stream->Write(req));
  }
  etcdserverpb::WatchResponse r;
  int created = 0;
  while (created < kWatchers && stream->Read(&r)) created += r.created();
  ASSERT_EQ(created, kWatchers);

  std::atomic<int64_t> last_put_revision{0};
  std::thread writer([&] {
    for (int i = 0; i < kPuts; ++i) {
      grpc::ClientContext pctx;
      etcdserverpb::PutRequest req;
      req.set_key("m/" + std::to_string(i % 7));
      req.set_value(std::to_string(i));
      etcdserverpb::PutResponse resp;
      grpc::Status st = kv->Put(&pctx, req, &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      last_put_revision = resp.header().revision();
    }
  });
  // Per watcher: the revisions received, in order.
  std::map<int64_t, std::vector<int64_t>> got;
  int64_t events = 0, responses = 0;
  while (events < int64_t{kWatchers} * kPuts && stream->Read(&r)) {
    if (r.events_size() == 0) continue;
    ++responses;
    for (const mvccpb::Event& e : r.events()) {
      got[r.watch_id()].push_back(e.kv().mod_revision());
      ++events;
    }
  }
  writer.join();
  ASSERT_EQ(events, int64_t{kWatchers} * kPuts);
  ASSERT_EQ(got.size(), static_cast<size_t>(kWatchers));
  for (const auto& [id, revs] : got) {
    ASSERT_EQ(revs.size(), static_cast<size_t>(kPuts)) << "watcher " << id;
    for (size_t i = 1; i < revs.size(); ++i) {
      ASSERT_EQ(revs[i], revs[i - 1] + 1) << "watcher " << id;
    }
    EXPECT_EQ(revs.back(), last_put_revision.load());
  }
  std::printf("%lld events in %lld responses\n", static_cast<long long>(events),
              static_cast<long long>(responses));

  // Closing mid-load: puts go on while the client half-closes; the server
  // ends the stream (OK) instead of leaving it open.
  std::thread more([&] {
    for (int i = 0; i < 50; ++i) {
      grpc::ClientContext pctx;
      etcdserverpb::PutRequest req;
      req.set_key("m/x");
      etcdserverpb::PutResponse resp;
      (void)kv->Put(&pctx, req, &resp);
    }
  });
  absl::SleepFor(absl::Milliseconds(30));
  ASSERT_TRUE(stream->WritesDone());
  while (stream->Read(&r)) {
  }
  grpc::Status end = stream->Finish();
  more.join();
  EXPECT_TRUE(end.ok()) << end.error_message();
}

}  // namespace
}  // namespace lockd::testing
