// A named thread that runs a step at the times the step itself asks for,
// until stopped: the shape of the member's periodic jobs (raft ticks, auto
// compaction, corruption checks).
//
// Its waits run on CLOCK_MONOTONIC itself (a condition variable waiting on
// steady_clock), not on absl::Mutex's wall-clock timed waits: a step of the
// wall clock, forward or backward, neither runs a step early nor delays it.
#ifndef LOCKD_UTIL_TIMED_LOOP_H_
#define LOCKD_UTIL_TIMED_LOOP_H_

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/time/time.h"

namespace lockd {

class TimedLoop {
 public:
  TimedLoop() = default;
  ~TimedLoop() { Stop(); }
  TimedLoop(const TimedLoop&) = delete;
  TimedLoop& operator=(const TimedLoop&) = delete;

  // Runs `step` at `first`, then at whatever time each run returns, on a
  // thread named `name`. Times are MonotonicNow() readings
  // (lockd/util/clock.h); absl::InfiniteFuture() waits for Stop. Call once.
  void Start(const std::string& name, absl::Time first,
             std::function<absl::Time()> step);
  // Runs the step now rather than at the time it asked for (after the one
  // in progress, if any; kicks before a step starts are one run). Any
  // thread; harmless after Stop.
  void Kick();
  // Wakes the thread out of its wait and joins it (a step in progress
  // finishes first). Idempotent.
  void Stop();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;    // guarded by mu_
  bool kicked_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace lockd

#endif  // LOCKD_UTIL_TIMED_LOOP_H_
