// A named thread that runs a step at the times the step itself asks for,
// until stopped: the shape of the member's periodic background jobs (auto
// compaction, corruption checks).
#ifndef LOCKD_UTIL_TIMED_LOOP_H_
#define LOCKD_UTIL_TIMED_LOOP_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
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
  // (lockd/util/clock.h). Call once.
  void Start(const std::string& name, absl::Time first,
             std::function<absl::Time()> step);
  // Wakes the thread out of its wait and joins it (a step in progress
  // finishes first). Idempotent.
  void Stop();

 private:
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace lockd

#endif  // LOCKD_UTIL_TIMED_LOOP_H_
