#include "lockd/util/timed_loop.h"

#include <gtest/gtest.h>

#include <vector>

#include "absl/synchronization/mutex.h"
#include "lockd/util/clock.h"

namespace lockd {
namespace {

TEST(TimedLoopTest, RunsEachStepNoEarlierThanItsTime) {
  absl::Mutex mu;
  std::vector<absl::Time> asked, ran;
  TimedLoop loop;
  const absl::Time first = MonotonicNow() + absl::Milliseconds(2);
  {
    absl::MutexLock lock(&mu);
    asked.push_back(first);
  }
  loop.Start("test-loop", first, [&] {
    absl::MutexLock lock(&mu);
    ran.push_back(MonotonicNow());
    // Now, in the past, and later: all run in order, none early.
    const absl::Time next = ran.size() == 2
                                ? ran.back() - absl::Seconds(1)
                                : ran.back() + absl::Milliseconds(3);
    asked.push_back(next);
    return next;
  });
  {
    absl::MutexLock lock(&mu);
    auto five = [&] { return ran.size() >= 5; };
    mu.Await(absl::Condition(&five));
  }
  loop.Stop();
  absl::MutexLock lock(&mu);
  for (size_t i = 0; i < ran.size(); ++i) {
    EXPECT_GE(ran[i], asked[i]) << i;
    if (i > 0) EXPECT_GE(ran[i], ran[i - 1]);
  }
}

TEST(TimedLoopTest, StopEndsAWaitFarAhead) {
  for (absl::Time first :
       {MonotonicNow() + absl::Hours(1), absl::InfiniteFuture()}) {
    bool ran = false;
    TimedLoop loop;
    loop.Start("test-loop", first, [&] {
      ran = true;
      return absl::InfiniteFuture();
    });
    loop.Stop();  // returns without waiting out the hour
    loop.Stop();  // and again, as the destructor will
    EXPECT_FALSE(ran);
  }
}

TEST(TimedLoopTest, KickRunsTheStepBeforeItsTime) {
  absl::Mutex mu;
  int runs = 0;
  TimedLoop loop;
  loop.Start("test-loop", MonotonicNow() + absl::Hours(1), [&] {
    absl::MutexLock lock(&mu);
    ++runs;
    return MonotonicNow() + absl::Hours(1);
  });
  for (int want = 1; want <= 3; ++want) {
    loop.Kick();
    absl::MutexLock lock(&mu);
    auto ran = [&] { return runs >= want; };
    mu.Await(absl::Condition(&ran));
  }
  loop.Stop();
  loop.Kick();  // after Stop: nothing runs, nothing breaks
  absl::MutexLock lock(&mu);
  EXPECT_EQ(runs, 3);
}

}  // namespace
}  // namespace lockd
