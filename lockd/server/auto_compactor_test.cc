#include "lockd/server/auto_compactor.h"

#include <gtest/gtest.h>

#include <vector>

namespace lockd {
namespace {

// Drives an AutoCompactor with its own clock: the store gains 10 revisions
// per minute; compactions are recorded.
class Driver {
 public:
  explicit Driver(AutoCompaction config,
                  absl::Duration revision_interval = absl::Minutes(5))
      : compactor_(config,
                   {[this] { return RevisionAt(now_); },
                    [this](int64_t rev) {
                      attempts.push_back(rev);
                      if (fail_next > 0) {
                        --fail_next;
                        return absl::UnavailableError("etcdserver: no leader");
                      }
                      done.push_back(rev);
                      return absl::OkStatus();
                    },
                    [this] { return active; }},
                   revision_interval) {}

  static int64_t RevisionAt(absl::Time t) {
    return 1 + 10 * absl::ToInt64Minutes(t - kStart);
  }

  // Steps the compactor until `until` (inclusive), as its thread would.
  void RunUntil(absl::Time until) {
    while (next_ <= until) {
      now_ = next_;
      next_ = compactor_.Step(now_);
    }
  }

  static inline const absl::Time kStart = absl::FromUnixSeconds(1000000);
  std::vector<int64_t> attempts, done;
  int fail_next = 0;
  bool active = true;
  AutoCompactor compactor_;

 private:
  absl::Time now_ = kStart;
  absl::Time next_ = kStart;
};

AutoCompaction Periodic(absl::Duration d) {
  AutoCompaction c;
  c.period = d;
  return c;
}

TEST(AutoCompactorTest, Periodic_FirstAfterThePeriodThenEveryPeriod) {
  Driver d(Periodic(absl::Hours(1)));
  d.RunUntil(Driver::kStart + absl::Minutes(59));
  EXPECT_TRUE(d.attempts.empty());
  // At one hour: the revision of one hour ago (the start).
  d.RunUntil(Driver::kStart + absl::Minutes(60));
  ASSERT_EQ(d.done, std::vector<int64_t>{Driver::RevisionAt(Driver::kStart)});
  d.RunUntil(Driver::kStart + absl::Minutes(119));
  EXPECT_EQ(d.done.size(), 1u);
  // An hour later, at the oldest sample kept (a period and a sample ago).
  d.RunUntil(Driver::kStart + absl::Minutes(120));
  ASSERT_EQ(d.done.size(), 2u);
  EXPECT_EQ(d.done[1], Driver::RevisionAt(Driver::kStart + absl::Minutes(54)));
  EXPECT_EQ(d.compactor_.compactions(), 2);
}

TEST(AutoCompactorTest, Periodic_LongPeriodCompactsHourlyKeepingThePeriod) {
  Driver d(Periodic(absl::Hours(24)));
  d.RunUntil(Driver::kStart + absl::Hours(24) - absl::Minutes(1));
  EXPECT_TRUE(d.attempts.empty());
  d.RunUntil(Driver::kStart + absl::Hours(24));
  ASSERT_EQ(d.done, std::vector<int64_t>{Driver::RevisionAt(Driver::kStart)});
  d.RunUntil(Driver::kStart + absl::Hours(25));
  ASSERT_EQ(d.done.size(), 2u);
  // Still about 24 hours of history kept.
  EXPECT_EQ(d.done[1], Driver::RevisionAt(Driver::kStart + absl::Minutes(54)));
}

TEST(AutoCompactorTest, Periodic_FailureRetriedAtTheNextSample) {
  Driver d(Periodic(absl::Minutes(10)));
  d.fail_next = 2;
  d.RunUntil(Driver::kStart + absl::Minutes(10));
  EXPECT_EQ(d.attempts.size(), 1u);
  EXPECT_TRUE(d.done.empty());
  d.RunUntil(Driver::kStart + absl::Minutes(12));
  EXPECT_EQ(d.attempts.size(), 3u);  // one a minute (a tenth of the period)
  ASSERT_EQ(d.done.size(), 1u);
  // Another period after the success, not after the first attempt.
  d.RunUntil(Driver::kStart + absl::Minutes(21));
  EXPECT_EQ(d.done.size(), 1u);
  d.RunUntil(Driver::kStart + absl::Minutes(22));
  EXPECT_EQ(d.done.size(), 2u);
}

TEST(AutoCompactorTest, Periodic_OnlyWhileActiveSamplingGoesOn) {
  Driver d(Periodic(absl::Minutes(10)));
  d.active = false;
  d.RunUntil(Driver::kStart + absl::Minutes(30));
  EXPECT_TRUE(d.attempts.empty());
  // A new leader compacts at once, at the revision of a period ago.
  d.active = true;
  d.RunUntil(Driver::kStart + absl::Minutes(31));
  ASSERT_EQ(d.done.size(), 1u);
  EXPECT_EQ(d.done[0], Driver::RevisionAt(Driver::kStart + absl::Minutes(20)));
}

TEST(AutoCompactorTest, Revision_KeepsNRevisionsEveryInterval) {
  AutoCompaction c;
  c.revisions = 100;
  Driver d(c);
  // Nothing in the first interval; at 5 minutes the store has 51 revisions,
  // fewer than the 100 to keep.
  d.RunUntil(Driver::kStart + absl::Minutes(5));
  EXPECT_TRUE(d.attempts.empty());
  d.RunUntil(Driver::kStart + absl::Minutes(15));
  EXPECT_EQ(d.done, (std::vector<int64_t>{101 - 100, 151 - 100}));
  d.active = false;
  d.RunUntil(Driver::kStart + absl::Minutes(25));
  EXPECT_EQ(d.done.size(), 2u);
  d.active = true;
  d.fail_next = 1;
  d.RunUntil(Driver::kStart + absl::Minutes(35));
  EXPECT_EQ(d.attempts.size(), 4u);
  EXPECT_EQ(d.done.back(), 351 - 100);
}

TEST(AutoCompactorTest, Revision_SameRevisionNotCompactedTwice) {
  AutoCompaction c;
  c.revisions = 5;
  int64_t revision = 50;
  std::vector<int64_t> done;
  AutoCompactor a(c,
                  {[&] { return revision; },
                   [&](int64_t r) {
                     done.push_back(r);
                     // Someone compacted further already: counts as done.
                     return absl::OutOfRangeError(
                         "mvcc: required revision has been compacted");
                   },
                   [] { return true; }},
                  absl::Seconds(1));
  absl::Time t = absl::UnixEpoch();
  for (int i = 0; i < 4; ++i) t = a.Step(t);  // no writes meanwhile
  EXPECT_EQ(done, std::vector<int64_t>{45});
  EXPECT_EQ(a.compactions(), 1);
  revision = 60;
  a.Step(t);
  EXPECT_EQ(done, (std::vector<int64_t>{45, 55}));
}

TEST(AutoCompactorTest, ThreadRunsTheScheduleUntilStopped) {
  std::atomic<int> calls{0};
  AutoCompactor a(Periodic(absl::Milliseconds(200)), {[] { return int64_t{7}; },
                                                      [&](int64_t r) {
                                                        EXPECT_EQ(r, 7);
                                                        calls.fetch_add(1);
                                                        return absl::OkStatus();
                                                      },
                                                      [] { return true; }});
  a.Start();
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (calls.load() < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  a.Stop();
  EXPECT_GE(calls.load(), 2);
  const int after = calls.load();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(calls.load(), after);
}

}  // namespace
}  // namespace lockd
