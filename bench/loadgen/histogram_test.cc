#include "bench/loadgen/histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace lockd_bench {
namespace {

TEST(HistogramTest, BucketLayout_ContiguousAndCovering) {
  const int n = Histogram::BucketCount();
  EXPECT_EQ(Histogram::BucketLow(0), 0u);
  for (int i = 1; i < n; ++i) {
    ASSERT_EQ(Histogram::BucketLow(i), Histogram::BucketHigh(i - 1) + 1) << i;
  }
  EXPECT_EQ(Histogram::BucketHigh(n - 1), Histogram::kValueMax);
}

TEST(HistogramTest, BucketIndex_ValueLiesInItsBucket) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const uint64_t clamped = std::min(v, Histogram::kValueMax);
    const int b = Histogram::BucketIndex(v);
    ASSERT_LE(Histogram::BucketLow(b), clamped);
    ASSERT_GE(Histogram::BucketHigh(b), clamped);
  }
}

TEST(HistogramTest, BucketWidth_UnderOnePercentOfValue) {
  for (int i = 0; i < Histogram::BucketCount(); ++i) {
    const uint64_t low = Histogram::BucketLow(i);
    const uint64_t width = Histogram::BucketHigh(i) - low;
    if (low == 0) continue;
    // Half the width is the worst error of the midpoint.
    ASSERT_LE(static_cast<double>(width) / 2 / low, 0.01) << i;
  }
}

TEST(HistogramTest, Empty_ReportsZeros) {
  Histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.Quantile(0.5), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(HistogramTest, SmallValues_AreExact) {
  Histogram h;
  for (uint64_t v = 1; v <= 100; ++v) h.Record(v);
  EXPECT_EQ(h.Quantile(0.5), 50u);
  EXPECT_EQ(h.Quantile(0.99), 99u);
  EXPECT_EQ(h.Quantile(1.0), 100u);
  EXPECT_EQ(h.Quantile(0.0), 1u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

// Against exact order statistics of a wide, skewed sample.
TEST(HistogramTest, Quantile_WithinOnePercentOfExact) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> dist(13.0, 1.5);  // ~ms in ns
  std::vector<uint64_t> values;
  Histogram h;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t v = static_cast<uint64_t>(dist(rng)) + 1;
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999, 1.0}) {
    const uint64_t rank = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::ceil(q * values.size())));
    const double exact = static_cast<double>(values[rank - 1]);
    const double got = static_cast<double>(h.Quantile(q));
    EXPECT_LE(std::fabs(got - exact) / exact, 0.01) << "q=" << q;
  }
  EXPECT_EQ(h.max(), values.back());
  EXPECT_EQ(h.min(), values.front());
}

TEST(HistogramTest, Merge_EqualsRecordingIntoOne) {
  std::mt19937_64 rng(3);
  Histogram a, b, all;
  for (int i = 0; i < 10000; ++i) {
    const uint64_t v = rng() % 50000000;
    (i % 3 == 0 ? a : b).Record(v);
    all.Record(v);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double q : {0.1, 0.5, 0.9, 0.99, 0.999}) {
    EXPECT_EQ(a.Quantile(q), all.Quantile(q)) << q;
  }
}

TEST(HistogramTest, Merge_IntoEmpty) {
  Histogram a, b;
  b.Record(5);
  a.Merge(b);
  EXPECT_EQ(a.count(), 1u);
  EXPECT_EQ(a.min(), 5u);
  EXPECT_EQ(a.Quantile(0.5), 5u);
}

TEST(HistogramTest, HugeValue_IsClamped) {
  Histogram h;
  h.Record(UINT64_MAX);
  EXPECT_EQ(h.max(), Histogram::kValueMax);
  EXPECT_EQ(h.Quantile(0.5), Histogram::kValueMax);
}

}  // namespace
}  // namespace lockd_bench
