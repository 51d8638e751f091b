#include "lockd/server/auto_compactor.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"

namespace lockd {
namespace {

// etcd samples (and retries) ten times per compaction interval.
constexpr int kSamplesPerInterval = 10;

absl::Duration CompactInterval(absl::Duration period) {
  return std::min(period, absl::Hours(1));
}

// Samples cover the period: one per sample interval, plus the one a whole
// period ago.
size_t SamplesKept(absl::Duration period) {
  if (period <= absl::ZeroDuration()) return 1;
  absl::Duration rest;
  return static_cast<size_t>(absl::IDivDuration(
             period, CompactInterval(period) / kSamplesPerInterval, &rest)) +
         1;
}

}  // namespace

AutoCompactor::AutoCompactor(AutoCompaction config, Hooks hooks,
                             absl::Duration revision_interval)
    : config_(config),
      hooks_(std::move(hooks)),
      revision_interval_(revision_interval),
      sample_interval_(CompactInterval(config.period) / kSamplesPerInterval),
      compact_interval_(CompactInterval(config.period)),
      samples_max_(SamplesKept(config.period)) {}

AutoCompactor::~AutoCompactor() { Stop(); }

bool AutoCompactor::Compact(int64_t revision, const std::string& why) {
  absl::Status s = hooks_.compact(revision);
  if (s.ok() || absl::IsOutOfRange(s)) {
    compactions_.fetch_add(1);
    Logf(LogLevel::kInfo, "compactor",
         "auto compaction at revision %d done (%s)", revision, why);
    return true;
  }
  Logf(LogLevel::kWarning, "compactor",
       "auto compaction at revision %d failed: %s; trying again in %s",
       revision, std::string(s.message()),
       absl::FormatDuration(config_.revisions > 0 ? revision_interval_
                                                  : sample_interval_));
  return false;
}

absl::Time AutoCompactor::Step(absl::Time now) {
  if (config_.revisions > 0) {
    if (!started_) {
      started_ = true;
      return now + revision_interval_;
    }
    if (hooks_.active()) {
      const int64_t revision = hooks_.revision() - config_.revisions;
      if (revision > 0 && revision != last_revision_ &&
          Compact(revision,
                  absl::StrCat("keeping ", config_.revisions, " revisions"))) {
        last_revision_ = revision;
      }
    }
    return now + revision_interval_;
  }
  if (!started_) {
    started_ = true;
    last_success_ = now;
    wait_ = config_.period;
  } else if (hooks_.active() && now - last_success_ >= wait_) {
    // The first compaction waits out the whole period; later ones come
    // every compaction interval (which is shorter for periods over 1 h).
    wait_ = compact_interval_;
    if (Compact(samples_.front(),
                absl::StrCat("keeping ", absl::FormatDuration(config_.period),
                             " of history"))) {
      last_success_ = now;
    }
  }
  samples_.push_back(hooks_.revision());
  if (samples_.size() > samples_max_) samples_.pop_front();
  return now + sample_interval_;
}

void AutoCompactor::Start() {
  loop_.Start("auto-compact", MonotonicNow(),
              [this] { return Step(MonotonicNow()); });
}

void AutoCompactor::Stop() { loop_.Stop(); }

}  // namespace lockd
