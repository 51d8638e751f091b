// A log-bucketed latency histogram in the style of HdrHistogram: values are
// kept in buckets whose width is 1/128 of their lower bound, so any quantile
// it reports is within 0.4% of a recorded value (the bucket's midpoint, and
// never outside [min, max]). Histograms with the same layout merge by adding
// counts, so each client records into its own and the run merges them.
//
// Thread safety: none; one writer per histogram, merge after writers stop.
#ifndef BENCH_LOADGEN_HISTOGRAM_H_
#define BENCH_LOADGEN_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace lockd_bench {

class Histogram {
 public:
  // Values up to `kValueMax` are recorded exactly into their bucket; larger
  // ones are clamped to it (2^40 ns is about 18 minutes).
  static constexpr int kSubBucketBits = 7;
  static constexpr uint64_t kValueMax = (uint64_t{1} << 40) - 1;

  Histogram();

  void Record(uint64_t value);
  void Merge(const Histogram& other);

  uint64_t count() const { return count_; }
  // 0 when empty.
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const;
  // `q` in [0, 1]. Returns the value at rank ceil(q * count) (the smallest
  // recorded value for q = 0, max() for q = 1), approximated by its bucket's
  // midpoint. 0 when empty.
  uint64_t Quantile(double q) const;

  // Bucket layout, exposed for tests.
  static int BucketIndex(uint64_t value);
  static uint64_t BucketLow(int index);
  static uint64_t BucketHigh(int index);  // inclusive
  static int BucketCount();

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  long double sum_ = 0;
};

}  // namespace lockd_bench

#endif  // BENCH_LOADGEN_HISTOGRAM_H_
