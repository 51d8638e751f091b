// A member's metrics in Prometheus' text exposition format, under etcd's
// names, so dashboards and alerts written for etcd work unchanged.
//
// A Registry owns metric families; each family has a name, help text, type
// and one series per label set. Components get the series they update once,
// at construction (a pointer that lives as long as the registry), and
// update them lock-free from any thread. Values that are cheaper to read
// when scraped than to keep current (a gauge such as the number of
// watchers) come from collectors, functions the registry calls on each
// Render.
//
// Thread safety: every method of every class here may be called from any
// thread. Pointers returned by a Registry stay valid until it is destroyed.
#ifndef LOCKD_UTIL_METRICS_H_
#define LOCKD_UTIL_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lockd::metrics {

// Label names and values of one series, in the order given.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A value that only goes up (resets with the process).
class Counter {
 public:
  void Add(uint64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  void Inc() { Add(1); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void Add(int64_t d) { value_.fetch_add(d, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Observations counted in cumulative buckets, with their count and sum, as
// Prometheus histograms are. The upper bounds are fixed at creation.
class Histogram {
 public:
  // `upper_bounds` strictly increasing; the +Inf bucket is implicit.
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double value);
  void ObserveDuration(absl::Duration d) { Observe(absl::ToDoubleSeconds(d)); }

  const std::vector<double>& upper_bounds() const { return bounds_; }
  // Per-bucket (not cumulative) counts; the last is the +Inf bucket.
  std::vector<uint64_t> BucketCounts() const;
  // The buckets' total.
  uint64_t count() const;
  double sum() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> sum_bits_{0};  // a double's bits, updated by CAS
};

// `count` bounds start, start*factor, ... (etcd's ExponentialBuckets).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// Appends one series' line to a collector's output; `type` of the family is
// given on the first call for a name.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void Gauge(absl::string_view name, absl::string_view help,
                     const Labels& labels, double value) = 0;
  virtual void Counter(absl::string_view name, absl::string_view help,
                       const Labels& labels, double value) = 0;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The series of `name` with `labels`, created on first use; later calls
  // with the same name and labels return the same series. A name is one
  // type: asking for it as another type is a programming error (aborts).
  Counter* GetCounter(absl::string_view name, absl::string_view help,
                      const Labels& labels = {});
  Gauge* GetGauge(absl::string_view name, absl::string_view help,
                  const Labels& labels = {});
  // `upper_bounds` are taken from the first call for the family.
  Histogram* GetHistogram(absl::string_view name, absl::string_view help,
                          const std::vector<double>& upper_bounds,
                          const Labels& labels = {});

  // Called on every Render, outside the registry's lock; must be cheap and
  // must not call back into the registry. Its families are rendered after
  // the registry's own (a name must not be both).
  void AddCollector(std::function<void(Sink&)> collect);

  // The text exposition format (version 0.0.4): families sorted by name,
  // series by labels.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  template <typename T>
  struct Series {
    Labels labels;
    std::unique_ptr<T> metric;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;  // histograms
    // Keyed by the rendered label set ("{a=\"b\"}" or "").
    std::map<std::string, Series<Counter>> counters;
    std::map<std::string, Series<Gauge>> gauges;
    std::map<std::string, Series<Histogram>> histograms;
  };
  Family* FamilyFor(absl::string_view name, absl::string_view help, Type type)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The series of `labels` in `family`, made from `args` if new.
  template <typename T, typename... Args>
  T* SeriesIn(std::map<std::string, Series<T>>* family, const Labels& labels,
              Args&&... args) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family, std::less<>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(Sink&)>> collectors_ ABSL_GUARDED_BY(mu_);
};

// `{name="value",...}` with Prometheus' escaping, or "" for no labels.
std::string RenderLabels(const Labels& labels);

}  // namespace lockd::metrics

#endif  // LOCKD_UTIL_METRICS_H_
