// Automatic compaction of the key-value history, on etcd's schedule
// (--auto-compaction-mode/--auto-compaction-retention), run by whichever
// member leads: the compaction goes through the log like a client's
// Compact, so every member drops the same history.
//
// Periodic, keeping P of history: the revision is sampled every P/10 (P
// capped at 1 h, so at least every 6 min); the first compaction comes P
// after start, at the revision sampled P ago; later ones every min(P, 1 h),
// again at the revision of P ago. Revision, keeping N: every 5 minutes,
// compact at (current revision - N) unless that is not positive or was the
// last one done. A failed compaction is retried at the next sample
// ("required revision has been compacted" counts as done). Members that do
// not lead keep sampling but do not compact, so a new leader continues the
// schedule.
#ifndef LOCKD_SERVER_AUTO_COMPACTOR_H_
#define LOCKD_SERVER_AUTO_COMPACTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "lockd/server/config.h"
#include "lockd/util/timed_loop.h"

namespace lockd {

class AutoCompactor {
 public:
  struct Hooks {
    // The store's current revision.
    std::function<int64_t()> revision;
    // Compacts the history below `revision` (a Compact call through the
    // log). kOutOfRange (already compacted) counts as done.
    std::function<absl::Status(int64_t revision)> compact;
    // Whether this member should compact now (it leads).
    std::function<bool()> active;
  };

  // `config` must be enabled(). `revision_interval` is etcd's 5 minutes;
  // tests shorten it.
  AutoCompactor(AutoCompaction config, Hooks hooks,
                absl::Duration revision_interval = absl::Minutes(5));
  ~AutoCompactor();
  AutoCompactor(const AutoCompactor&) = delete;
  AutoCompactor& operator=(const AutoCompactor&) = delete;

  // One step of the schedule at time `now`; returns when to call it next.
  // Start() calls it on its own thread; tests call it with their own clock.
  absl::Time Step(absl::Time now);

  // Runs Step on a thread until Stop().
  void Start();
  void Stop();

  // Compactions done (including ones the store had already passed).
  int64_t compactions() const { return compactions_.load(); }

 private:
  // Compacts at `revision`; true when done.
  bool Compact(int64_t revision, const std::string& why);

  const AutoCompaction config_;
  const Hooks hooks_;
  const absl::Duration revision_interval_;
  // Periodic mode.
  const absl::Duration sample_interval_;
  const absl::Duration compact_interval_;
  const size_t samples_max_;
  std::deque<int64_t> samples_;
  absl::Time last_success_ = absl::InfinitePast();
  absl::Duration wait_ = absl::ZeroDuration();  // before the next compaction
  bool started_ = false;
  // Revision mode: the last revision compacted at.
  int64_t last_revision_ = 0;
  std::atomic<int64_t> compactions_{0};

  TimedLoop loop_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_AUTO_COMPACTOR_H_
