// lockctl lock NAME [command...] and lockctl elect NAME [proposal], like
// etcdctl's, but through the server-side Lock and Election services (so the
// hand-over to the next waiter happens on the server):
// - lock: takes the lock with a lease of --ttl seconds (default 10) kept
//   alive meanwhile; without a command prints the key and holds the lock
//   until SIGINT/SIGTERM; with one runs it while holding the lock, with
//   ETCD_LOCK_KEY and ETCD_LOCK_REV (the fencing token) in its environment,
//   as etcdctl does, and exits with its status. Unlocks and revokes after.
// - elect: with a proposal campaigns, prints the leader key and value once
//   elected and leads until SIGINT/SIGTERM, then resigns; without one (or
//   with -l/--listen) prints every leader change (key, then value).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/client/client.h"
#include "lockd/ctl/command.h"
#include "lockd/ctl/output.h"
#include "v3electionpb/v3election.grpc.pb.h"
#include "v3lockpb/v3lock.grpc.pb.h"

namespace lockd::ctl {

namespace {

// SIGINT/SIGTERM end the command: a thread waits for them (they are blocked
// everywhere else) and cancels the call in flight.
class Interrupts {
 public:
  Interrupts() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    // Before any other thread exists, so every thread inherits the mask.
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    std::thread([this] {
      int sig = 0;
      sigwait(&set_, &sig);
      absl::MutexLock lock(&mu_);
      fired_ = true;
      if (call_ != nullptr) call_->TryCancel();
    }).detach();
  }
  const sigset_t& set() const { return set_; }
  // The call a signal should cancel (null: none).
  void SetCall(grpc::ClientContext* call) {
    absl::MutexLock lock(&mu_);
    call_ = call;
    if (fired_ && call_ != nullptr) call_->TryCancel();
  }
  bool fired() {
    absl::MutexLock lock(&mu_);
    return fired_;
  }
  void Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&fired_));
  }

 private:
  sigset_t set_;
  absl::Mutex mu_;
  bool fired_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// A lease of `ttl_s` seconds kept alive until destroyed (then revoked).
class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Start(client::Client* c,
                                                        int64_t ttl_s) {
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(ttl_s);
    auto granted = c->LeaseGrant(req);
    if (!granted.ok()) return granted.status();
    return std::unique_ptr<Session>(new Session(c, granted->id()));
  }
  ~Session() {
    stop_ = true;
    etcdserverpb::LeaseRevokeRequest req;
    req.set_id(id_);
    (void)c_->LeaseRevoke(req);  // also ends the keep-alive stream
    keeper_.join();
  }
  int64_t id() const { return id_; }

 private:
  Session(client::Client* c, int64_t id) : c_(c), id_(id) {
    keeper_ = std::thread([this] {
      (void)c_->LeaseKeepAlive(
          id_, [this](const etcdserverpb::LeaseKeepAliveResponse&) {
            return !stop_.load();
          });
    });
  }
  client::Client* c_;
  const int64_t id_;
  std::atomic<bool> stop_{false};
  std::thread keeper_;
};

// The first endpoint whose answer is not UNAVAILABLE wins. With
// `interrupts` a signal cancels the call; the clean-up calls after a signal
// pass null.
template <typename Stub, typename Call>
grpc::Status OnAnyEndpoint(const CommandContext& g, Interrupts* interrupts,
                           absl::Duration timeout, Call&& call) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      client::ChannelCredentialsFor(g.tls, g.endpoints);
  if (!credentials.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        std::string(credentials.status().message()));
  }
  grpc::Status st(grpc::StatusCode::UNAVAILABLE, "no endpoints");
  for (const std::string& raw : g.endpoints) {
    absl::StatusOr<std::string> e = client::NormalizeEndpoint(raw);
    if (!e.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          std::string(e.status().message()));
    }
    auto stub = Stub::NewStub(grpc::CreateChannel(*e, *credentials));
    grpc::ClientContext ctx;
    if (timeout != absl::InfiniteDuration()) {
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    }
    if (interrupts != nullptr) interrupts->SetCall(&ctx);
    st = call(stub.get(), &ctx);
    if (interrupts != nullptr) interrupts->SetCall(nullptr);
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return st;
  }
  return st;
}

struct Parsed {
  int64_t ttl_s = 10;
  bool listen = false;
  std::vector<std::string> args;
};

// Flags come before NAME; everything after NAME belongs to the command.
bool Parse(const std::vector<std::string>& in, Parsed* p) {
  size_t i = 0;
  for (; i < in.size() && absl::StartsWith(in[i], "-"); ++i) {
    std::string flag = in[i];
    std::string value;
    if (size_t eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag == "-l" || flag == "--listen") {
      p->listen = true;
    } else if (flag == "--ttl") {
      if (value.empty() && i + 1 < in.size()) value = in[++i];
      if (!absl::SimpleAtoi(value, &p->ttl_s) || p->ttl_s <= 0) {
        Fail("--ttl takes a positive number of seconds");
        return false;
      }
    } else {
      Fail(absl::StrCat("unknown flag ", in[i]));
      return false;
    }
  }
  p->args.assign(in.begin() + i, in.end());
  return true;
}

int Lock(const CommandContext& g, Interrupts* interrupts, client::Client* c,
         const Parsed& p) {
  if (p.args.empty()) return Fail("lock takes a lock name argument");
  auto session = Session::Start(c, p.ttl_s);
  if (!session.ok()) return Fail(ErrorWithHint(session.status()));
  v3lockpb::LockRequest req;
  req.set_name(p.args[0]);
  req.set_lease((*session)->id());
  v3lockpb::LockResponse resp;
  grpc::Status st = OnAnyEndpoint<v3lockpb::Lock>(
      g, interrupts, absl::InfiniteDuration(),
      [&](v3lockpb::Lock::Stub* s, grpc::ClientContext* ctx) {
        return s->Lock(ctx, req, &resp);
      });
  if (!st.ok()) return Fail(st.error_message());
  int code = 0;
  if (p.args.size() == 1) {
    std::printf("%s\n", resp.key().c_str());
    std::fflush(stdout);
    interrupts->Wait();
  } else {
    // The fencing token: the key's create revision.
    etcdserverpb::RangeRequest get;
    get.set_key(resp.key());
    auto got = c->Range(get);
    const int64_t token = got.ok() && got->kvs_size() > 0
                              ? got->kvs(0).create_revision()
                              : resp.header().revision();
    // Everything the child needs is built here: between fork and exec a
    // child of this multithreaded process may only make async-signal-safe
    // calls (allocating there can deadlock it).
    std::vector<std::string> environment;
    for (char** e = environ; *e != nullptr; ++e) {
      const absl::string_view entry(*e);
      if (!absl::StartsWith(entry, "ETCD_LOCK_KEY=") &&
          !absl::StartsWith(entry, "ETCD_LOCK_REV=")) {
        environment.emplace_back(entry);
      }
    }
    environment.push_back("ETCD_LOCK_KEY=" + resp.key());
    environment.push_back(absl::StrCat("ETCD_LOCK_REV=", token));
    std::vector<char*> envp;
    for (std::string& e : environment) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<char*> argv;
    for (size_t i = 1; i < p.args.size(); ++i) {
      argv.push_back(const_cast<char*>(p.args[i].c_str()));
    }
    argv.push_back(nullptr);
    const std::string cannot_run =
        absl::StrCat("Error: cannot run ", p.args[1], "\n");
    pid_t pid = fork();
    if (pid == 0) {
      pthread_sigmask(SIG_UNBLOCK, &interrupts->set(), nullptr);
      execvpe(argv[0], argv.data(), envp.data());
      (void)!write(STDERR_FILENO, cannot_run.data(), cannot_run.size());
      _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) {
      code = Fail("cannot start the command");
    } else {
      code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
  }
  v3lockpb::UnlockRequest unlock;
  unlock.set_key(resp.key());
  v3lockpb::UnlockResponse unlocked;
  st = OnAnyEndpoint<v3lockpb::Lock>(
      g, nullptr, g.command_timeout,
      [&](v3lockpb::Lock::Stub* s, grpc::ClientContext* ctx) {
        return s->Unlock(ctx, unlock, &unlocked);
      });
  if (!st.ok()) Fail(st.error_message());
  return code;
}

int Elect(const CommandContext& g, Interrupts* interrupts, client::Client* c,
          const Parsed& p) {
  if (p.args.empty()) return Fail("elect takes an election name argument");
  const std::string& name = p.args[0];
  if (p.listen || p.args.size() == 1) {
    v3electionpb::LeaderRequest req;
    req.set_name(name);
    grpc::Status st = OnAnyEndpoint<v3electionpb::Election>(
        g, interrupts, absl::InfiniteDuration(),
        [&](v3electionpb::Election::Stub* s, grpc::ClientContext* ctx) {
          auto reader = s->Observe(ctx, req);
          v3electionpb::LeaderResponse r;
          while (reader->Read(&r)) {
            std::printf("%s\n%s\n", r.kv().key().c_str(),
                        r.kv().value().c_str());
            std::fflush(stdout);
          }
          return reader->Finish();
        });
    if (interrupts->fired()) return 0;
    return st.ok() ? 0 : Fail(st.error_message());
  }
  auto session = Session::Start(c, p.ttl_s);
  if (!session.ok()) return Fail(ErrorWithHint(session.status()));
  v3electionpb::CampaignRequest req;
  req.set_name(name);
  req.set_lease((*session)->id());
  req.set_value(p.args[1]);
  v3electionpb::CampaignResponse resp;
  grpc::Status st = OnAnyEndpoint<v3electionpb::Election>(
      g, interrupts, absl::InfiniteDuration(),
      [&](v3electionpb::Election::Stub* s, grpc::ClientContext* ctx) {
        return s->Campaign(ctx, req, &resp);
      });
  if (!st.ok()) return Fail(st.error_message());
  std::printf("%s\n%s\n", resp.leader().key().c_str(), p.args[1].c_str());
  std::fflush(stdout);
  interrupts->Wait();
  v3electionpb::ResignRequest resign;
  *resign.mutable_leader() = resp.leader();
  v3electionpb::ResignResponse resigned;
  st = OnAnyEndpoint<v3electionpb::Election>(
      g, nullptr, g.command_timeout,
      [&](v3electionpb::Election::Stub* s, grpc::ClientContext* ctx) {
        return s->Resign(ctx, resign, &resigned);
      });
  if (!st.ok()) return Fail(st.error_message());
  return 0;
}

}  // namespace

int RunLockCommand(const std::string& command, const CommandContext& g,
                   const std::vector<std::string>& in) {
  Parsed p;
  if (!Parse(in, &p)) return 1;
  Interrupts interrupts;  // first: before any thread starts
  client::ClientOptions o;
  o.endpoints = g.endpoints;
  o.dial_timeout = g.dial_timeout;
  o.call_timeout = g.command_timeout;
  o.tls = g.tls;
  auto c = client::Client::Create(o);
  if (!c.ok()) return Fail(ErrorWithHint(c.status()));
  if (command == "lock") return Lock(g, &interrupts, c->get(), p);
  return Elect(g, &interrupts, c->get(), p);
}

}  // namespace lockd::ctl
