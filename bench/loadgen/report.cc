// Text and JSON reports of a run.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/loadgen/loadgen.h"
#include "lockd/util/json.h"

namespace lockd_bench {
namespace {

using ::lockd::JsonString;

constexpr double kQuantiles[] = {0.5, 0.9, 0.99, 0.999};
constexpr const char* kQuantileNames[] = {"p50", "p90", "p99", "p99.9"};

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

// JSON has no NaN or infinity.
std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return absl::StrFormat("%.0f", v);
  }
  return absl::StrFormat("%.6g", v);
}

std::string HistogramJson(const Histogram& h) {
  std::string out = absl::StrCat("{\"count\":", h.count());
  for (size_t i = 0; i < 4; ++i) {
    absl::StrAppend(&out, ",\"", kQuantileNames[i],
                    "\":", JsonNumber(Ms(h.Quantile(kQuantiles[i]))));
  }
  absl::StrAppend(&out, ",\"max\":", JsonNumber(Ms(h.max())),
                  ",\"min\":", JsonNumber(Ms(h.min())),
                  ",\"mean\":", JsonNumber(h.mean() / 1e6), "}");
  return out;
}

std::string HistogramText(const Histogram& h) {
  if (h.count() == 0) return "(none)";
  std::string out;
  for (size_t i = 0; i < 4; ++i) {
    absl::StrAppendFormat(&out, "%s %.3f  ", kQuantileNames[i],
                          Ms(h.Quantile(kQuantiles[i])));
  }
  absl::StrAppendFormat(&out, "max %.3f  mean %.3f  (n=%d)", Ms(h.max()),
                        h.mean() / 1e6, h.count());
  return out;
}

}  // namespace

uint64_t Result::error_total() const {
  uint64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

std::string FormatText(const Result& r) {
  const Config& c = r.config;
  std::string out = absl::StrFormat(
      "workload %s  endpoints %s  conns %d  clients %d  key-size %d  "
      "val-size %d  key-space %d%s\n",
      r.workload, r.endpoint_used, c.conns, c.clients, c.key_size, c.val_size,
      c.key_space_size, c.sequential_keys ? " (sequential)" : "");
  absl::StrAppendFormat(&out, "  ops        %d in %.3f s: %.1f ops/s\n", r.ops,
                        r.duration_s, r.throughput());
  absl::StrAppendFormat(&out, "  latency ms %s\n", HistogramText(r.latency_ns));
  for (const auto& [name, h] : r.histograms_ns) {
    absl::StrAppendFormat(&out, "  %-10s %s\n", name + " ms", HistogramText(h));
  }
  for (const auto& [name, value] : r.metrics) {
    if (value == std::floor(value) && std::fabs(value) < 1e15) {
      absl::StrAppendFormat(&out, "  %-26s %.0f\n", name, value);
    } else {
      absl::StrAppendFormat(&out, "  %-26s %.6g\n", name, value);
    }
  }
  std::string errors = "none";
  if (!r.errors.empty()) {
    errors = absl::StrJoin(r.errors, " ", absl::PairFormatter("="));
  }
  absl::StrAppendFormat(&out, "  errors     %s\n", errors);
  absl::StrAppendFormat(&out, "  loadgen    %.1f%% of one core\n",
                        r.loadgen_cpu_pct);
  return out;
}

std::string FormatJson(const Result& r) {
  const Config& c = r.config;
  std::string out = "{";
  absl::StrAppend(&out, "\"workload\":", JsonString(r.workload));
  absl::StrAppend(&out, ",\"label\":", JsonString(c.label));
  absl::StrAppend(&out, ",\"endpoint\":", JsonString(r.endpoint_used));
  absl::StrAppend(
      &out, ",\"config\":{\"conns\":", c.conns, ",\"clients\":", c.clients,
      ",\"total\":", c.total,
      ",\"duration_s\":", JsonNumber(absl::ToDoubleSeconds(c.duration)),
      ",\"rate\":", c.rate, ",\"key_size\":", c.key_size,
      ",\"val_size\":", c.val_size, ",\"key_space_size\":", c.key_space_size,
      ",\"sequential_keys\":", c.sequential_keys ? "true" : "false",
      ",\"target_leader\":", c.target_leader ? "true" : "false",
      ",\"consistency\":", JsonString(c.consistency),
      ",\"watchers\":", c.watchers, ",\"watch_streams\":", c.watch_streams,
      ",\"lock_names\":", c.lock_names, ",\"read_percent\":", c.read_percent,
      "}");
  absl::StrAppend(&out, ",\"duration_s\":", JsonNumber(r.duration_s));
  absl::StrAppend(&out, ",\"ops\":", r.ops);
  absl::StrAppend(&out, ",\"throughput\":", JsonNumber(r.throughput()));
  absl::StrAppend(&out, ",\"latency_ms\":", HistogramJson(r.latency_ns));
  absl::StrAppend(&out, ",\"histograms_ms\":{");
  for (size_t i = 0; i < r.histograms_ns.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", JsonString(r.histograms_ns[i].first),
                    ":", HistogramJson(r.histograms_ns[i].second));
  }
  absl::StrAppend(&out, "},\"metrics\":{");
  for (size_t i = 0; i < r.metrics.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", JsonString(r.metrics[i].first), ":",
                    JsonNumber(r.metrics[i].second));
  }
  absl::StrAppend(&out, "},\"errors\":{");
  bool first = true;
  for (const auto& [code, count] : r.errors) {
    absl::StrAppend(&out, first ? "" : ",", JsonString(code), ":", count);
    first = false;
  }
  absl::StrAppend(&out, "},\"errors_total\":", r.error_total());
  absl::StrAppend(&out, ",\"loadgen_cpu_pct\":", JsonNumber(r.loadgen_cpu_pct),
                  "}");
  return out;
}

}  // namespace lockd_bench
