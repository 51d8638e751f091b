#include "lockd/util/metrics.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace lockd::metrics {
namespace {

TEST(MetricsTest, RendersCountersGaugesAndCollectorsSortedByName) {
  Registry r;
  r.GetCounter("b_total", "Bees.")->Add(3);
  r.GetGauge("a_gauge", "An \"a\"\\ gauge\nwith two lines.")->Set(-2);
  r.GetCounter("c_total", "Sees.", {{"To", "7f"}})->Inc();
  r.GetCounter("c_total", "Sees.", {{"To", "1a"}})->Add(2);
  // The same name and labels are the same series.
  r.GetCounter("c_total", "Sees.", {{"To", "1a"}})->Inc();
  r.AddCollector([](Sink& sink) {
    sink.Gauge("d_bytes", "Dees.", {}, 2147483648.0);
    sink.Counter("aa_total", "Double a.", {{"v", "x\"y\\z\n"}}, 0.5);
  });
  EXPECT_EQ(r.Render(),
            "# HELP a_gauge An \"a\"\\\\ gauge\\nwith two lines.\n"
            "# TYPE a_gauge gauge\n"
            "a_gauge -2\n"
            "# HELP aa_total Double a.\n"
            "# TYPE aa_total counter\n"
            "aa_total{v=\"x\\\"y\\\\z\\n\"} 0.5\n"
            "# HELP b_total Bees.\n"
            "# TYPE b_total counter\n"
            "b_total 3\n"
            "# HELP c_total Sees.\n"
            "# TYPE c_total counter\n"
            "c_total{To=\"1a\"} 3\n"
            "c_total{To=\"7f\"} 1\n"
            "# HELP d_bytes Dees.\n"
            "# TYPE d_bytes gauge\n"
            "d_bytes 2.147483648e+09\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithEtcdsBounds) {
  Registry r;
  Histogram* h = r.GetHistogram("etcd_disk_wal_fsync_duration_seconds",
                                "The latency distributions of fsync called "
                                "by WAL.",
                                ExponentialBuckets(0.001, 2, 4));
  h->Observe(0.0005);  // first bucket
  h->Observe(0.001);   // a bound is inclusive
  h->Observe(0.003);   // le 0.004
  h->Observe(5);       // +Inf
  EXPECT_EQ(h->count(), 4u);
  EXPECT_EQ(
      r.Render(),
      "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions "
      "of fsync called by WAL.\n"
      "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
      "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 2\n"
      "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 2\n"
      "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 3\n"
      "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.008\"} 3\n"
      "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 4\n"
      "etcd_disk_wal_fsync_duration_seconds_sum 5.0045\n"
      "etcd_disk_wal_fsync_duration_seconds_count 4\n");
}

TEST(MetricsTest, HistogramWithLabelsPutsLeLast) {
  Registry r;
  r.GetHistogram("h", "H.", {1}, {{"To", "ab"}})->Observe(2);
  EXPECT_EQ(r.Render(),
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{To=\"ab\",le=\"1\"} 0\n"
            "h_bucket{To=\"ab\",le=\"+Inf\"} 1\n"
            "h_sum{To=\"ab\"} 2\n"
            "h_count{To=\"ab\"} 1\n");
}

TEST(MetricsTest, ExponentialBucketsPrintAsEtcdsDo) {
  Registry r;
  Histogram* h = r.GetHistogram("h", "H.", ExponentialBuckets(0.001, 2, 14));
  std::vector<uint64_t> counts = h->BucketCounts();
  EXPECT_EQ(counts.size(), 15u);
  const std::string text = r.Render();
  for (const char* le : {"0.001", "0.008", "0.128", "1.024", "8.192"}) {
    EXPECT_NE(text.find(std::string("le=\"") + le + "\""), std::string::npos)
        << le << " in " << text;
  }
}

TEST(MetricsTest, ValuesPrintAsGosShortestFormat) {
  Registry r;
  r.AddCollector([](Sink& sink) {
    sink.Gauge("a", "A.", {{"v", "1"}}, 20000);
    sink.Gauge("a", "A.", {{"v", "2"}}, 1e6);
    sink.Gauge("a", "A.", {{"v", "3"}}, 0.0045);
    sink.Gauge("a", "A.", {{"v", "4"}}, 0.00001);
    sink.Gauge("a", "A.", {{"v", "5"}}, -1);
    sink.Gauge("a", "A.", {{"v", "6"}}, 0);
    sink.Gauge("a", "A.", {{"v", "7"}}, 1796418532.62);
    sink.Gauge("a", "A.", {{"v", "8"}}, 123456.5);
  });
  EXPECT_EQ(r.Render(),
            "# HELP a A.\n# TYPE a gauge\n"
            "a{v=\"1\"} 20000\n"
            "a{v=\"2\"} 1e+06\n"
            "a{v=\"3\"} 0.0045\n"
            "a{v=\"4\"} 1e-05\n"
            "a{v=\"5\"} -1\n"
            "a{v=\"6\"} 0\n"
            "a{v=\"7\"} 1.79641853262e+09\n"
            "a{v=\"8\"} 123456.5\n");
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  Registry r;
  Counter* c = r.GetCounter("c", "C.");
  Histogram* h = r.GetHistogram("h", "H.", {0.5});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c->Inc();
        h->Observe(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(c->value(), 40000u);
  EXPECT_EQ(h->count(), 40000u);
  EXPECT_DOUBLE_EQ(h->sum(), 40000.0);
}

TEST(MetricsDeathTest, OneNameIsOneType) {
  Registry r;
  r.GetCounter("x", "X.");
  EXPECT_DEATH(r.GetGauge("x", "X."), "two types");
}

}  // namespace
}  // namespace lockd::metrics
