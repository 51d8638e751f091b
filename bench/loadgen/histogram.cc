#include "bench/loadgen/histogram.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace lockd_bench {
namespace {

constexpr uint64_t kSubBuckets = uint64_t{1} << Histogram::kSubBucketBits;

int BitWidth(uint64_t v) { return v == 0 ? 0 : 64 - __builtin_clzll(v); }

}  // namespace

// Values below 128 get one bucket each. Above, a value v with bit width w is
// split into shift = w - 1 - 7 and a mantissa v >> shift in [128, 256); the
// bucket is (shift + 1) * 128 + (mantissa - 128) and spans 2^shift values.
int Histogram::BucketIndex(uint64_t value) {
  if (value > kValueMax) value = kValueMax;
  if (value < kSubBuckets) return static_cast<int>(value);
  const int shift = BitWidth(value) - 1 - kSubBucketBits;
  const uint64_t mantissa = value >> shift;
  return static_cast<int>((shift + 1) * kSubBuckets + (mantissa - kSubBuckets));
}

uint64_t Histogram::BucketLow(int index) {
  const uint64_t i = static_cast<uint64_t>(index);
  if (i < kSubBuckets) return i;
  const uint64_t shift = i / kSubBuckets - 1;
  const uint64_t mantissa = i % kSubBuckets + kSubBuckets;
  return mantissa << shift;
}

uint64_t Histogram::BucketHigh(int index) {
  const uint64_t i = static_cast<uint64_t>(index);
  if (i < kSubBuckets) return i;
  const uint64_t shift = i / kSubBuckets - 1;
  return BucketLow(index) + (uint64_t{1} << shift) - 1;
}

int Histogram::BucketCount() { return BucketIndex(kValueMax) + 1; }

Histogram::Histogram() : counts_(BucketCount(), 0) {}

void Histogram::Record(uint64_t value) {
  if (value > kValueMax) value = kValueMax;
  ++counts_[BucketIndex(value)];
  ++count_;
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
  sum_ += value;
}

void Histogram::Merge(const Histogram& other) {
  assert(counts_.size() == other.counts_.size());
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
}

double Histogram::mean() const {
  return count_ == 0 ? 0.0 : static_cast<double>(sum_ / count_);
}

uint64_t Histogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::min(1.0, std::max(0.0, q));
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * count_));
  if (rank == 0) rank = 1;
  if (rank >= count_) return max_;
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const int index = static_cast<int>(i);
      const uint64_t low = BucketLow(index);
      const uint64_t mid = low + (BucketHigh(index) - low) / 2;
      return std::min(max_, std::max(min(), mid));
    }
  }
  return max_;
}

}  // namespace lockd_bench
