#include "lockd/util/clock.h"

#include <time.h>

#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace lockd {
namespace {

TEST(MonotonicNowTest, IsTheMonotonicClockNotTheWallClock) {
  timespec ts;
  ASSERT_EQ(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
  const absl::Time before = absl::UnixEpoch() + absl::DurationFromTimespec(ts);
  const absl::Time a = MonotonicNow();
  const absl::Time b = MonotonicNow();
  EXPECT_GE(a, before);
  EXPECT_GE(b, a);
  // Years apart from the wall clock (unless the machine has been up since
  // about 1970).
  EXPECT_GT(absl::Now() - a, absl::Hours(24 * 365));
}

// The deadline is read on the monotonic clock. Handed to absl::Mutex's own
// AwaitWithDeadline, which reads it as a wall-clock time (decades ago), the
// same wait would return at once.
TEST(AwaitUntilTest, WaitsOutAMonotonicDeadline) {
  absl::Mutex mu;
  bool never = false;
  const auto start = std::chrono::steady_clock::now();
  const absl::Time deadline = MonotonicNow() + absl::Milliseconds(150);
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(AwaitUntil(mu, absl::Condition(&never), deadline));
  EXPECT_GE(MonotonicNow(), deadline);
  EXPECT_GE(std::chrono::steady_clock::now() - start,
            std::chrono::milliseconds(150));
}

TEST(AwaitUntilTest, ConditionAlreadyTrueAnswersEvenPastTheDeadline) {
  absl::Mutex mu;
  bool yes = true;
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(AwaitUntil(mu, absl::Condition(&yes), absl::InfinitePast()));
  EXPECT_TRUE(AwaitUntil(mu, absl::Condition(&yes), MonotonicNow()));
  EXPECT_TRUE(AwaitFor(mu, absl::Condition(&yes), absl::ZeroDuration()));
}

TEST(AwaitUntilTest, PastDeadlineWithConditionFalseAnswersAtOnce) {
  absl::Mutex mu;
  bool never = false;
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(AwaitUntil(mu, absl::Condition(&never), absl::InfinitePast()));
  EXPECT_FALSE(AwaitFor(mu, absl::Condition(&never), -absl::Seconds(1)));
}

TEST(AwaitUntilTest, WakesWhenAnotherThreadMakesTheConditionTrue) {
  for (absl::Time deadline :
       {MonotonicNow() + absl::Minutes(10), absl::InfiniteFuture()}) {
    absl::Mutex mu;
    bool done = false;
    std::thread setter([&] {
      absl::MutexLock lock(&mu);
      done = true;
    });
    {
      absl::MutexLock lock(&mu);
      EXPECT_TRUE(AwaitUntil(mu, absl::Condition(&done), deadline));
    }
    setter.join();
  }
}

TEST(GrpcDeadlineTest, ConvertsTheTimeLeftBetweenClocks) {
  const auto grpc = std::chrono::system_clock::now() + std::chrono::seconds(30);
  const absl::Time mono = FromGrpcDeadline(grpc);
  // The time left is kept (to well within a second), whatever the clocks'
  // origins.
  EXPECT_GT(mono - MonotonicNow(), absl::Seconds(29));
  EXPECT_LE(mono - MonotonicNow(), absl::Seconds(30));
  const auto back = ToGrpcDeadline(mono);
  EXPECT_LT(back - grpc, std::chrono::seconds(1));
  EXPECT_GT(back - grpc, std::chrono::seconds(-1));
}

TEST(GrpcDeadlineTest, NoDeadlineIsNever) {
  EXPECT_EQ(FromGrpcDeadline(std::chrono::system_clock::time_point::max()),
            absl::InfiniteFuture());
  EXPECT_EQ(ToGrpcDeadline(absl::InfiniteFuture()),
            std::chrono::system_clock::time_point::max());
}

}  // namespace
}  // namespace lockd
