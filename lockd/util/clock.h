// The clock a member's deadlines and timeouts run on, and waits on it.
//
// Inside a member every deadline, timeout and interval is a reading of
// CLOCK_MONOTONIC (MonotonicNow), never of the wall clock. The wall clock
// steps: NTP corrects it, and a virtual machine resumed after a pause jumps
// it forward by the pause. On the wall clock a step forward would time out
// every request in flight at once and end a raft tick early; on the
// monotonic clock a pause is just a pause.
//
// Two places still meet the wall clock, and convert there:
//   - gRPC deadlines are system_clock time points (FromGrpcDeadline,
//     ToGrpcDeadline);
//   - absl::Mutex's timed waits take wall-clock deadlines (on Linux, a
//     futex wait on CLOCK_REALTIME), so AwaitUntil waits again whenever one
//     returns early because the wall clock moved on, until the monotonic
//     deadline has really passed. A step backward during a wait still
//     lengthens that one wait by the step; nothing ends early. Periodic
//     work (raft ticks, the lease driver, the request-timeout sweeper, the
//     member's once-a-second and background jobs) runs on TimedLoop
//     (timed_loop.h), whose waits are on CLOCK_MONOTONIC itself, so no
//     step delays it.
#ifndef LOCKD_UTIL_CLOCK_H_
#define LOCKD_UTIL_CLOCK_H_

#include <chrono>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lockd {

// CLOCK_MONOTONIC as an absl::Time. Its origin is the boot, not the epoch,
// so only differences between readings, and comparisons with deadlines
// computed from them, mean anything. absl::InfiniteFuture() is "never".
absl::Time MonotonicNow();

// A gRPC deadline as a MonotonicNow time: the time left until it, counted
// from now. system_clock's max() (no deadline) is absl::InfiniteFuture().
absl::Time FromGrpcDeadline(std::chrono::system_clock::time_point deadline);

// A MonotonicNow deadline as a gRPC (system_clock) deadline.
std::chrono::system_clock::time_point ToGrpcDeadline(absl::Time deadline);

// With `mu` held, waits until `cond` holds or MonotonicNow() reaches
// `deadline`, whichever comes first. Returns whether `cond` holds.
bool AwaitUntil(absl::Mutex& mu, const absl::Condition& cond,
                absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

// AwaitUntil(mu, cond, MonotonicNow() + timeout).
bool AwaitFor(absl::Mutex& mu, const absl::Condition& cond,
              absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

}  // namespace lockd

#endif  // LOCKD_UTIL_CLOCK_H_
