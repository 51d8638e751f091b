#include "lockd/util/timed_loop.h"

#include <chrono>
#include <utility>

#include "lockd/util/thread_name.h"

namespace lockd {
namespace {

// A MonotonicNow() reading as a steady_clock time point: both count
// CLOCK_MONOTONIC (libstdc++'s steady_clock is CLOCK_MONOTONIC on Linux, and
// its condition variable waits on that clock for steady_clock deadlines).
std::chrono::steady_clock::time_point ToSteady(absl::Time t) {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(
      absl::ToInt64Nanoseconds(t - absl::UnixEpoch())));
}

}  // namespace

void TimedLoop::Start(const std::string& name, absl::Time first,
                      std::function<absl::Time()> step) {
  thread_ = std::thread([this, name, first, step = std::move(step)] {
    SetThreadName(name);
    absl::Time next = first;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        auto woken = [this] { return stop_ || kicked_; };
        if (next == absl::InfiniteFuture()) {
          cv_.wait(lock, woken);
        } else {
          cv_.wait_until(lock, ToSteady(next), woken);
        }
        if (stop_) return;
        kicked_ = false;
      }
      next = step();
    }
  });
}

void TimedLoop::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

void TimedLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace lockd
