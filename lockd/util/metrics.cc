#include "lockd/util/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace lockd::metrics {
namespace {

// As Go's FormatFloat(v, 'g', -1, 64), which etcd's client library uses:
// the fewest digits that read back as `v` (0.008, not
// 0.0080000000000000002), in exponent form when the decimal exponent is
// below -4 or 6 and up (2.147483648e+09, but 20000).
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[48];
  int digits_after_point = 0;
  for (; digits_after_point < 17; ++digits_after_point) {
    std::snprintf(buf, sizeof(buf), "%.*e", digits_after_point, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  const int exponent = std::atoi(std::strchr(buf, 'e') + 1);
  if (exponent < -4 || exponent >= 6) return buf;
  std::snprintf(buf, sizeof(buf), "%.*f",
                std::max(digits_after_point - exponent, 0), v);
  return buf;
}

void AppendEscaped(std::string* out, absl::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '"':
        out->append("\\\"");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

double BitsToDouble(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, sizeof(d));
  return d;
}

uint64_t DoubleToBits(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof(d));
  return bits;
}

// What Render writes for one family: its header and series lines, keyed by
// label set so they come out sorted.
struct Rendered {
  std::string type;
  std::string help;
  std::map<std::string, std::string> lines;
};

using RenderedFamilies = std::map<std::string, Rendered, std::less<>>;

class CollectingSink : public Sink {
 public:
  explicit CollectingSink(RenderedFamilies* out) : out_(out) {}
  void Gauge(absl::string_view name, absl::string_view help,
             const Labels& labels, double value) override {
    Add(name, "gauge", help, labels, value);
  }
  void Counter(absl::string_view name, absl::string_view help,
               const Labels& labels, double value) override {
    Add(name, "counter", help, labels, value);
  }

 private:
  void Add(absl::string_view name, absl::string_view type,
           absl::string_view help, const Labels& labels, double value) {
    Rendered& r = (*out_)[std::string(name)];
    if (r.type.empty()) {
      r.type = std::string(type);
      r.help = std::string(help);
    }
    const std::string key = RenderLabels(labels);
    r.lines[key] = absl::StrCat(name, key, " ", FormatValue(value), "\n");
  }
  RenderedFamilies* out_;
};

// One line per series of a counter or gauge family, keyed by label set.
template <typename SeriesMap>
void RenderValues(const std::string& name, const SeriesMap& family,
                  std::map<std::string, std::string>* lines) {
  for (const auto& [key, s] : family) {
    (*lines)[key] =
        absl::StrCat(name, key, " ",
                     FormatValue(static_cast<double>(s.metric->value())), "\n");
  }
}

}  // namespace

std::string RenderLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out.push_back(',');
    absl::StrAppend(&out, labels[i].first, "=\"");
    AppendEscaped(&out, labels[i].second);
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double b = start;
  for (int i = 0; i < count; ++i) {
    bounds.push_back(b);
    b *= factor;
  }
  return bounds;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i] = 0;
}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  uint64_t old_bits = sum_bits_.load(std::memory_order_relaxed);
  while (!sum_bits_.compare_exchange_weak(
      old_bits, DoubleToBits(BitsToDouble(old_bits) + value),
      std::memory_order_relaxed)) {
  }
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> counts(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    counts[i] = buckets_[i].load(std::memory_order_relaxed);
  }
  return counts;
}

uint64_t Histogram::count() const {
  uint64_t total = 0;
  for (uint64_t n : BucketCounts()) total += n;
  return total;
}

double Histogram::sum() const {
  return BitsToDouble(sum_bits_.load(std::memory_order_relaxed));
}

Registry::Family* Registry::FamilyFor(absl::string_view name,
                                      absl::string_view help, Type type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{}).first;
    it->second.type = type;
    it->second.help = std::string(help);
  }
  if (it->second.type != type) {
    std::fprintf(stderr, "metric %s registered with two types\n",
                 std::string(name).c_str());
    std::abort();
  }
  return &it->second;
}

template <typename T, typename... Args>
T* Registry::SeriesIn(std::map<std::string, Series<T>>* family,
                      const Labels& labels, Args&&... args) {
  Series<T>& series = (*family)[RenderLabels(labels)];
  if (series.metric == nullptr) {
    series.labels = labels;
    series.metric = std::make_unique<T>(std::forward<Args>(args)...);
  }
  return series.metric.get();
}

Counter* Registry::GetCounter(absl::string_view name, absl::string_view help,
                              const Labels& labels) {
  absl::MutexLock lock(&mu_);
  return SeriesIn(&FamilyFor(name, help, Type::kCounter)->counters, labels);
}

Gauge* Registry::GetGauge(absl::string_view name, absl::string_view help,
                          const Labels& labels) {
  absl::MutexLock lock(&mu_);
  return SeriesIn(&FamilyFor(name, help, Type::kGauge)->gauges, labels);
}

Histogram* Registry::GetHistogram(absl::string_view name,
                                  absl::string_view help,
                                  const std::vector<double>& upper_bounds,
                                  const Labels& labels) {
  absl::MutexLock lock(&mu_);
  Family* f = FamilyFor(name, help, Type::kHistogram);
  if (f->bounds.empty()) f->bounds = upper_bounds;
  return SeriesIn(&f->histograms, labels, f->bounds);
}

void Registry::AddCollector(std::function<void(Sink&)> collect) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string Registry::Render() const {
  RenderedFamilies out;
  std::vector<std::function<void(Sink&)>> collectors;
  {
    absl::MutexLock lock(&mu_);
    collectors = collectors_;
    for (const auto& [name, f] : families_) {
      Rendered& r = out[name];
      r.help = f.help;
      switch (f.type) {
        case Type::kCounter:
          r.type = "counter";
          RenderValues(name, f.counters, &r.lines);
          break;
        case Type::kGauge:
          r.type = "gauge";
          RenderValues(name, f.gauges, &r.lines);
          break;
        case Type::kHistogram: {
          r.type = "histogram";
          for (const auto& [key, s] : f.histograms) {
            const Histogram& h = *s.metric;
            // The count is the +Inf bucket's, from the same reading.
            const std::vector<uint64_t> counts = h.BucketCounts();
            std::string lines;
            uint64_t cumulative = 0;
            for (size_t i = 0; i < counts.size(); ++i) {
              cumulative += counts[i];
              Labels with_le = s.labels;
              with_le.emplace_back("le", i < h.upper_bounds().size()
                                             ? FormatValue(h.upper_bounds()[i])
                                             : "+Inf");
              absl::StrAppend(&lines, name, "_bucket", RenderLabels(with_le),
                              " ", cumulative, "\n");
            }
            absl::StrAppend(&lines, name, "_sum", key, " ",
                            FormatValue(h.sum()), "\n", name, "_count", key,
                            " ", cumulative, "\n");
            r.lines[key] = std::move(lines);
          }
          break;
        }
      }
    }
  }
  CollectingSink sink(&out);
  for (const auto& collect : collectors) collect(sink);
  std::string text;
  for (const auto& [name, r] : out) {
    absl::StrAppend(&text, "# HELP ", name, " ", EscapeHelp(r.help),
                    "\n# TYPE ", name, " ", r.type, "\n");
    for (const auto& [key, line] : r.lines) text.append(line);
  }
  return text;
}

}  // namespace lockd::metrics
