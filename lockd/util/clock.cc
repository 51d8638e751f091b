#include "lockd/util/clock.h"

#include <time.h>

namespace lockd {

absl::Time MonotonicNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::UnixEpoch() + absl::DurationFromTimespec(ts);
}

absl::Time FromGrpcDeadline(std::chrono::system_clock::time_point deadline) {
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return MonotonicNow() + (absl::FromChrono(deadline) - absl::Now());
}

std::chrono::system_clock::time_point ToGrpcDeadline(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) {
    return std::chrono::system_clock::time_point::max();
  }
  return absl::ToChronoTime(absl::Now() + (deadline - MonotonicNow()));
}

bool AwaitUntil(absl::Mutex& mu, const absl::Condition& cond,
                absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) {
    mu.Await(cond);
    return true;
  }
  while (true) {
    const absl::Duration left = deadline - MonotonicNow();
    if (left <= absl::ZeroDuration()) return cond.Eval();
    // Returns false early when the wall clock steps forward (its deadline
    // is a wall-clock one): the loop then waits for what is really left.
    if (mu.AwaitWithTimeout(cond, left)) return true;
  }
}

bool AwaitFor(absl::Mutex& mu, const absl::Condition& cond,
              absl::Duration timeout) {
  // An infinite timeout gives absl::InfiniteFuture(): AwaitUntil's wait
  // without a deadline.
  return AwaitUntil(mu, cond, MonotonicNow() + timeout);
}

}  // namespace lockd
