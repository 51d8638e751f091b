// The machinery shared by the workloads: connections, the run budget (total,
// duration, rate), a timer thread for rate limiting, and the closed-loop
// driver for unary requests on gRPC's callback API.
//
// Why the callback API: 200 clients on 2 cores must not need 200 threads;
// each client is a small state object whose next request is started from the
// previous one's completion, on gRPC's own threads.
#ifndef BENCH_LOADGEN_DRIVER_H_
#define BENCH_LOADGEN_DRIVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bench/loadgen/histogram.h"
#include "bench/loadgen/loadgen.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "v3lockpb/v3lock.grpc.pb.h"

namespace lockd_bench {

// Monotonic nanoseconds.
uint64_t NowNs();
// "UNAVAILABLE", "DEADLINE_EXCEEDED", ...
std::string CodeName(grpc::StatusCode code);
// "host:port" from "host:port" or "http://host:port".
std::string StripScheme(const std::string& endpoint);

// `n` channels, each its own TCP connection (a local subchannel pool keeps
// gRPC from sharing one), spread round-robin over the endpoints. Thread-safe
// after construction; stubs live as long as the Conns.
class Conns {
 public:
  Conns(const std::vector<std::string>& endpoints, uint64_t n);
  size_t size() const { return channels_.size(); }
  // Connection for client `i`.
  size_t For(uint64_t i) const { return i % channels_.size(); }
  etcdserverpb::KV::Stub* kv(size_t i) { return kv_[i].get(); }
  etcdserverpb::Watch::Stub* watch(size_t i) { return watch_[i].get(); }
  etcdserverpb::Lease::Stub* lease(size_t i) { return lease_[i].get(); }
  v3lockpb::Lock::Stub* lock(size_t i) { return lock_[i].get(); }
  // Waits up to `timeout` for every channel to connect.
  bool WaitConnected(absl::Duration timeout);

 private:
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> kv_;
  std::vector<std::unique_ptr<etcdserverpb::Watch::Stub>> watch_;
  std::vector<std::unique_ptr<etcdserverpb::Lease::Stub>> lease_;
  std::vector<std::unique_ptr<v3lockpb::Lock::Stub>> lock_;
};

// Decides whether another request may start, and when. Thread-safe.
// A run ends when `total` requests were handed out (if total > 0), when the
// duration is over (if > 0), or on Stop(). With a rate, request n is due at
// start + n / rate (an open schedule, so a slow answer does not lower the
// offered rate of the other clients).
class Budget {
 public:
  Budget(uint64_t total, absl::Duration duration, uint64_t rate);
  void Start();  // call once, before the first Next()
  // False when the run is over; else *due_ns is when to send (<= now when
  // unlimited).
  bool Next(uint64_t* due_ns);
  void Stop() { stopped_.store(true); }
  bool over() const;
  uint64_t start_ns() const { return start_ns_; }

 private:
  const uint64_t total_;
  const uint64_t duration_ns_;
  const uint64_t rate_;
  uint64_t start_ns_ = 0;
  std::atomic<uint64_t> issued_{0};
  std::atomic<bool> stopped_{false};
};

// Runs closures at given times on one thread. The destructor runs whatever is
// still pending at once, then joins.
class Scheduler {
 public:
  Scheduler();
  ~Scheduler();
  void At(uint64_t due_ns, std::function<void()> fn);

 private:
  struct Item {
    uint64_t due_ns;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Item& o) const {
      return due_ns != o.due_ns ? due_ns > o.due_ns : seq > o.seq;
    }
  };
  void Loop();
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return woken_; }
  absl::Mutex mu_;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> items_
      ABSL_GUARDED_BY(mu_);
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;  // an earlier item or done_
  std::thread thread_;
};

// One client's requests. The driver calls Kind() then Start() for each
// request, never two at once for the same client.
class ClientOp {
 public:
  virtual ~ClientOp() = default;
  // Kind of the next request (index into the run's kind names).
  virtual int Kind() { return 0; }
  // Starts one request on `ctx` (fresh, deadline set). Must call `done`
  // exactly once, from any thread, after the request ends.
  virtual void Start(grpc::ClientContext* ctx,
                     std::function<void(const grpc::Status&)> done) = 0;
  // After the run: adds workload-specific figures.
  virtual void Collect(Result* result) {}
};

struct DriverStats {
  uint64_t ops = 0;
  std::map<std::string, uint64_t> errors;
  std::vector<Histogram> latency_ns;  // one per kind
  uint64_t first_start_ns = 0;
  uint64_t last_done_ns = 0;
};

// Runs every op as a closed-loop client until `budget` is over and blocks
// until all of them have finished their last request.
DriverStats RunClients(const std::vector<ClientOp*>& ops, int kinds,
                       Budget* budget, Scheduler* scheduler,
                       absl::Duration request_timeout);

// /proc readers; -1 when unreadable.
int64_t ProcCpuNs(int pid);
int64_t ProcRssBytes(int pid);
// Allocated bytes (like du) of everything under `path`; -1 if unreadable.
int64_t DirBytes(const std::string& path);
// This process's user + system CPU time.
uint64_t SelfCpuNs();

}  // namespace lockd_bench

#endif  // BENCH_LOADGEN_DRIVER_H_
