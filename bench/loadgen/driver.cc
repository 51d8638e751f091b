#include "bench/loadgen/driver.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cassert>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace lockd_bench {

uint64_t NowNs() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::UNKNOWN:
      return "UNKNOWN";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "CODE_" + std::to_string(static_cast<int>(code));
  }
}

std::string StripScheme(const std::string& endpoint) {
  for (const char* scheme : {"http://", "https://"}) {
    if (absl::StartsWith(endpoint, scheme)) {
      return endpoint.substr(std::string(scheme).size());
    }
  }
  return endpoint;
}

Conns::Conns(const std::vector<std::string>& endpoints, uint64_t n) {
  assert(!endpoints.empty() && n > 0);
  for (uint64_t i = 0; i < n; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("lockd_bench.conn", static_cast<int>(i));
    args.SetMaxReceiveMessageSize(64 << 20);
    auto channel =
        grpc::CreateCustomChannel(StripScheme(endpoints[i % endpoints.size()]),
                                  grpc::InsecureChannelCredentials(), args);
    kv_.push_back(etcdserverpb::KV::NewStub(channel));
    watch_.push_back(etcdserverpb::Watch::NewStub(channel));
    lease_.push_back(etcdserverpb::Lease::NewStub(channel));
    lock_.push_back(v3lockpb::Lock::NewStub(channel));
    channels_.push_back(std::move(channel));
  }
}

bool Conns::WaitConnected(absl::Duration timeout) {
  const auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout);
  for (auto& channel : channels_) {
    if (!channel->WaitForConnected(deadline)) return false;
  }
  return true;
}

Budget::Budget(uint64_t total, absl::Duration duration, uint64_t rate)
    : total_(total),
      duration_ns_(static_cast<uint64_t>(absl::ToInt64Nanoseconds(duration))),
      rate_(rate) {}

void Budget::Start() { start_ns_ = NowNs(); }

bool Budget::over() const {
  if (stopped_.load()) return true;
  if (total_ > 0 && issued_.load() >= total_) return true;
  return duration_ns_ > 0 && NowNs() - start_ns_ >= duration_ns_;
}

bool Budget::Next(uint64_t* due_ns) {
  if (stopped_.load()) return false;
  const uint64_t n = issued_.fetch_add(1);
  if (total_ > 0 && n >= total_) return false;
  const uint64_t now = NowNs();
  if (duration_ns_ > 0 && now - start_ns_ >= duration_ns_) return false;
  *due_ns = now;
  if (rate_ > 0) {
    const uint64_t due =
        start_ns_ + static_cast<uint64_t>(static_cast<unsigned __int128>(n) *
                                          1000000000u / rate_);
    if (duration_ns_ > 0 && due - start_ns_ >= duration_ns_) return false;
    *due_ns = due;
  }
  return true;
}

Scheduler::Scheduler() : thread_([this] { Loop(); }) {}

Scheduler::~Scheduler() {
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    woken_ = true;
  }
  thread_.join();
}

void Scheduler::At(uint64_t due_ns, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (items_.empty() || due_ns < items_.top().due_ns) woken_ = true;
  items_.push(Item{due_ns, seq_++, std::move(fn)});
}

void Scheduler::Loop() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        if (!items_.empty() && (done_ || items_.top().due_ns <= NowNs())) {
          break;
        }
        if (done_ && items_.empty()) return;
        // Sleep until the earliest item is due, or an earlier one arrives.
        woken_ = false;
        const absl::Duration wait =
            items_.empty() ? absl::InfiniteDuration()
                           : absl::Nanoseconds(static_cast<int64_t>(
                                 items_.top().due_ns - NowNs()));
        mu_.AwaitWithTimeout(absl::Condition(this, &Scheduler::Woken), wait);
      }
      fn = std::move(const_cast<Item&>(items_.top()).fn);
      items_.pop();
    }
    // Never call out with the lock held.
    fn();
  }
}

namespace {

// How deeply Send() calls nest on this thread.
thread_local int tls_depth = 0;

struct ClientState {
  ClientOp* op = nullptr;
  std::unique_ptr<grpc::ClientContext> ctx;
  int kind = 0;
  uint64_t sent_ns = 0;
  uint64_t last_done_ns = 0;
  uint64_t first_start_ns = 0;
  uint64_t ok = 0;
  std::map<std::string, uint64_t> errors;
  std::vector<Histogram> latency_ns;
};

class Runner {
 public:
  Runner(Budget* budget, Scheduler* scheduler, absl::Duration timeout,
         size_t clients)
      : budget_(budget),
        scheduler_(scheduler),
        timeout_(absl::ToChronoNanoseconds(timeout)),
        active_(clients) {}

  void Next(ClientState* c) {
    uint64_t due_ns;
    if (!budget_->Next(&due_ns)) {
      Finish();
      return;
    }
    // A call that fails at once may complete inside Start(); bounce through
    // the scheduler before such completions nest deeply.
    if (tls_depth > 8) {
      scheduler_->At(due_ns, [this, c] { Send(c); });
      return;
    }
    if (due_ns > NowNs()) {
      scheduler_->At(due_ns, [this, c] { Send(c); });
    } else {
      Send(c);
    }
  }

  void WaitAll() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](size_t* active) { return *active == 0; }, &active_));
  }

 private:
  void Send(ClientState* c) {
    // The previous call has completed, so its context may go.
    c->ctx = std::make_unique<grpc::ClientContext>();
    c->ctx->set_deadline(std::chrono::system_clock::now() + timeout_);
    c->kind = c->op->Kind();
    c->sent_ns = NowNs();
    if (c->first_start_ns == 0) c->first_start_ns = c->sent_ns;
    ++tls_depth;
    c->op->Start(c->ctx.get(), [this, c](const grpc::Status& status) {
      const uint64_t now = NowNs();
      c->last_done_ns = now;
      if (status.ok()) {
        ++c->ok;
        c->latency_ns[c->kind].Record(now - c->sent_ns);
      } else {
        ++c->errors[CodeName(status.error_code())];
      }
      Next(c);
    });
    --tls_depth;
  }

  void Finish() {
    absl::MutexLock lock(&mu_);
    --active_;
  }

  Budget* budget_;
  Scheduler* scheduler_;
  std::chrono::nanoseconds timeout_;
  absl::Mutex mu_;
  size_t active_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

DriverStats RunClients(const std::vector<ClientOp*>& ops, int kinds,
                       Budget* budget, Scheduler* scheduler,
                       absl::Duration request_timeout) {
  std::vector<ClientState> clients(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    clients[i].op = ops[i];
    clients[i].latency_ns.resize(kinds);
  }
  Runner runner(budget, scheduler, request_timeout, ops.size());
  for (auto& c : clients) runner.Next(&c);
  runner.WaitAll();

  DriverStats stats;
  stats.latency_ns.resize(kinds);
  stats.first_start_ns = UINT64_MAX;
  for (auto& c : clients) {
    stats.ops += c.ok;
    for (const auto& [code, n] : c.errors) stats.errors[code] += n;
    for (int k = 0; k < kinds; ++k) stats.latency_ns[k].Merge(c.latency_ns[k]);
    if (c.first_start_ns != 0) {
      stats.first_start_ns = std::min(stats.first_start_ns, c.first_start_ns);
    }
    stats.last_done_ns = std::max(stats.last_done_ns, c.last_done_ns);
  }
  if (stats.first_start_ns == UINT64_MAX) stats.first_start_ns = 0;
  return stats;
}

int64_t ProcCpuNs(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  // The command name may hold spaces; fields resume after the last ')'.
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(line.substr(paren + 2));
  std::string field;
  int64_t utime = -1, stime = -1;
  // Field 3 (state) is the first after ')'; utime and stime are 14 and 15.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  if (utime < 0 || stime < 0) return -1;
  return (utime + stime) * (1000000000 / sysconf(_SC_CLK_TCK));
}

int64_t ProcRssBytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      std::istringstream fields(line.substr(6));
      int64_t kb = -1;
      fields >> kb;
      return kb < 0 ? -1 : kb * 1024;
    }
  }
  return -1;
}

int64_t DirBytes(const std::string& path) {
  std::error_code ec;
  int64_t total = 0;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return -1;
  total += static_cast<int64_t>(st.st_blocks) * 512;
  if (!S_ISDIR(st.st_mode)) return total;
  for (auto it = std::filesystem::recursive_directory_iterator(path, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (::lstat(it->path().c_str(), &st) == 0) {
      total += static_cast<int64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

uint64_t SelfCpuNs() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  auto ns = [](const timeval& tv) {
    return static_cast<uint64_t>(tv.tv_sec) * 1000000000u +
           static_cast<uint64_t>(tv.tv_usec) * 1000u;
  };
  return ns(usage.ru_utime) + ns(usage.ru_stime);
}

}  // namespace lockd_bench
