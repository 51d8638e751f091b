// A small pool of threads for work that blocks, so that gRPC's callback
// threads never do: a callback handler hands its rare slow path (waiting out
// an election, retrying under a new leader) to the pool and returns.
//
// Threads are started on demand up to `max_threads` and stay for the pool's
// life; tasks beyond them queue (up to `max_queued`, then Submit refuses).
// The destructor runs every queued task before joining. Thread-safe.
#ifndef LOCKD_SERVER_WORKER_POOL_H_
#define LOCKD_SERVER_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lockd/util/thread_name.h"

namespace lockd {

class WorkerPool {
 public:
  // `name` names the threads (at most 15 characters are kept).
  WorkerPool(std::string name, size_t max_threads, size_t max_queued)
      : name_(std::move(name)),
        max_threads_(max_threads),
        max_queued_(max_queued) {}
  ~WorkerPool() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False when the queue is full (the task is not run).
  bool Submit(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    if (queue_.size() >= max_queued_) return false;
    queue_.push_back(std::move(task));
    if (idle_ == 0 && threads_.size() < max_threads_) {
      threads_.emplace_back([this] { Run(); });
    }
    return true;
  }

 private:
  void Run() {
    SetThreadName(name_);
    absl::MutexLock lock(&mu_);
    while (true) {
      ++idle_;
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      --idle_;
      if (queue_.empty()) return;  // stopping, nothing left
      std::function<void()> task = std::move(queue_.front());
      queue_.pop_front();
      mu_.Unlock();
      task();
      mu_.Lock();
    }
  }

  const std::string name_;
  const size_t max_threads_;
  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_WORKER_POOL_H_
