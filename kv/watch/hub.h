// The watch hub: turns the events the apply loop commits into per-watcher
// outputs (etcd v3 Watch semantics), with bounded memory and without ever
// blocking the apply loop.
//
// Flow. The apply loop calls Publish() after each committed batch; that
// appends the batch to a bounded queue. A dispatcher thread matches each
// batch against the *synced* watchers (those whose next revision is the
// hub's revision() + 1) and appends outputs to the watchers' streams. Each
// stream has a bounded output queue; the service drains it (Take) and sends.
// A small batch (its events times the hub's watchers at most
// WatchOptions::inline_dispatch_max) that finds the dispatcher idle and
// nothing queued is matched by Publish itself instead, on the apply loop's
// thread, as etcd does: the watchers' streams get it before the writer's
// answer, without a thread's wake-up in between. Either way the apply loop
// never waits for a watcher: a stream only queues what it is given.
// A watcher whose stream queue is full, whose start revision is in the past,
// or that existed when the hub's own queue overflowed or the store was
// replaced becomes *unsynced*: a catch-up thread reads its events from
// MvccStore::History (a bounded slice at a time, only when its stream has
// room) and moves it back to the synced set exactly when it has reached the
// hub's revision. Hence, per watcher:
//  - events arrive in revision order, none twice, none skipped;
//  - all matching events of one revision are in one output (a txn's writes
//    arrive together);
//  - a start revision below the compaction point (or history compacted while
//    catching up) ends the watcher with a compacted output.
//
// Memory: the hub queue holds at most WatchOptions::hub_queue_batches_max
// batches and hub_queue_bytes_max bytes; a stream queue at most
// stream_buffer_bytes_max bytes of events (one output larger than that is
// admitted only into an empty queue, so a huge txn still gets through). Outputs
// share the batch they came from (EventBatch, immutable, with each event
// serialized once), so a thousand watchers of one key hold one copy of its
// events.
//
// Thread safety: everything is thread-safe. Lock order: hub mu_ -> stream
// mu_. The wake callback of a stream runs with no hub or stream lock held.
#ifndef LOCKD_KV_WATCH_HUB_H_
#define LOCKD_KV_WATCH_HUB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kv/mvcc/store.h"
#include "mvccpb/kv.pb.h"

namespace lockd::kv {

inline absl::Status ErrWatcherDuplicateID() {
  return absl::InvalidArgumentError(
      "mvcc: duplicate watch ID provided on the WatchStream");
}
inline absl::Status ErrEmptyWatcherRange() {
  return absl::InvalidArgumentError("mvcc: watcher range is empty");
}
inline absl::Status ErrTooManyWatchers() {
  return absl::ResourceExhaustedError(
      "lockd: too many watchers on this stream");
}

struct WatchOptions {
  // Bytes of serialized events a stream may hold before its watchers fall
  // back to catching up from storage.
  size_t stream_buffer_bytes_max = 8 << 20;
  // Watchers one stream may hold.
  size_t watchers_per_stream_max = 100000;
  // Committed batches waiting for the dispatcher; beyond it, batches are
  // dropped and every synced watcher catches up from storage instead.
  size_t hub_queue_batches_max = 4096;
  size_t hub_queue_bytes_max = 64 << 20;
  // A batch whose events times the hub's watchers is at most this is
  // dispatched by Publish on the apply loop's thread when the dispatcher is
  // idle (see above); larger ones always go to the dispatcher, so thousands
  // of watchers never lengthen an apply. 0: never inline.
  size_t inline_dispatch_max = 256;
  // Events and bytes one History read returns at most (whole revisions).
  size_t catchup_events_max = 1000;
  size_t catchup_bytes_max = 1 << 20;
  // etcd's progress report interval for watchers with progress_notify.
  absl::Duration progress_interval = absl::Minutes(10);
};

// The events of one committed batch (or one history slice), immutable once
// built, shared by every output that refers to it.
struct EventBatch {
  std::vector<mvccpb::Event> events;
  // Each event serialized without prev_kv, and (where it has one) with it.
  std::vector<std::string> plain;
  std::vector<std::string> with_prev;
  // Roughly the memory the events take (for the hub queue's bound).
  size_t approx_bytes = 0;
  // Builds the serialized forms. `with_prev_kv`: also the with-prev form.
  void Serialize(bool with_prev_kv);
};

// One thing to send on a stream, in order.
struct WatchOutput {
  enum class Kind {
    kCreated,    // create succeeded (watch_id) or failed (cancel_reason)
    kCanceled,   // cancel request answered
    kEvents,     // events (revision: header revision)
    kProgress,   // no events; everything up to `revision` was delivered
    kCompacted,  // watcher ended: compact_revision set, canceled
  };
  Kind kind = Kind::kEvents;
  int64_t watch_id = -1;
  // The header revision.
  int64_t revision = 0;
  int64_t compact_revision = 0;
  std::string cancel_reason;
  bool prev_kv = false;
  bool fragment = false;
  // kEvents: batch->events[i] for i in indices, in order.
  std::shared_ptr<const EventBatch> batch;
  absl::InlinedVector<uint32_t, 4> indices;
  // Serialized bytes of the events this output carries (for bounds).
  size_t bytes = 0;
};

struct WatchSpec {
  // 0: the hub assigns the lowest unused id >= the stream's next id.
  int64_t watch_id = 0;
  std::string key;
  // Empty: just `key`; "\0": every key >= key; else [key, range_end).
  std::string range_end;
  // 0: from the store's current revision + 1.
  int64_t start_revision = 0;
  bool prev_kv = false;
  bool no_put = false;
  bool no_delete = false;
  bool progress_notify = false;
  bool fragment = false;
};

class WatchHub;

// One client stream's watchers and its output queue. Obtained from
// WatchHub::OpenStream; Close() before dropping it.
class WatchStream {
 public:
  // Adds a watcher and queues its kCreated output. Errors (etcd's):
  // ErrWatcherDuplicateID, ErrEmptyWatcherRange, ErrTooManyWatchers, and
  // kFailedPrecondition once closed. On error nothing is queued; the caller
  // answers with created + canceled itself.
  absl::StatusOr<int64_t> Create(const WatchSpec& spec);
  // Removes the watcher, drops its queued outputs and queues kCanceled.
  // False if no such watcher (etcd then answers nothing).
  bool Cancel(int64_t watch_id);
  // Queues a kProgress (watch_id -1) whose revision every watcher of this
  // stream has been sent all events up to.
  void RequestProgress();
  // Moves the queued outputs into *out (appending); returns how many.
  size_t Take(std::vector<WatchOutput>* out);
  // Removes every watcher; after it returns the wake callback is never
  // called again.
  void Close();
  // Number of watchers (for tests and limits).
  size_t watcher_count();

 private:
  friend class WatchHub;
  WatchStream(WatchHub* hub, std::function<void()> wake)
      : hub_(hub), wake_(std::move(wake)) {}
  // Appends unless it would exceed the byte bound; `force` ignores the
  // bound. Returns false if not appended.
  bool Push(WatchOutput out, bool force) ABSL_LOCKS_EXCLUDED(mu_);
  // Appends outs[i] for each i in `order` that fits (one lock for all);
  // sets refused[i] for those that did not.
  void PushMany(std::vector<WatchOutput>* outs,
                const std::vector<size_t>& order, std::vector<bool>* refused)
      ABSL_LOCKS_EXCLUDED(mu_);
  bool HasRoom(size_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void Wake();

  WatchHub* const hub_;
  absl::Mutex mu_;
  std::deque<WatchOutput> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Mutex wake_mu_;
  std::function<void()> wake_ ABSL_GUARDED_BY(wake_mu_);
  // Guarded by the hub's mu_ (watcher bookkeeping lives in the hub).
  int64_t next_id_ = 0;
  bool closed_ = false;
};

class WatchHub {
 public:
  // `store` must outlive the hub (or its replacement by OnStoreReplaced).
  WatchHub(const MvccStore* store, WatchOptions options = {});
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // Starts the dispatcher and catch-up threads. Stop() joins them (also
  // done by the destructor). Streams must be closed before the hub dies.
  void Start();
  void Stop();

  // The apply loop's hand-off after a batch is committed to the store:
  // that batch's events (ApplyBatch::TakeEvents), in revision order. Never
  // blocks on watchers.
  void Publish(std::vector<mvccpb::Event> events);
  // The store was replaced wholesale (snapshot install): every watcher
  // catches up from the new store's history (or is told it was compacted).
  // Call from the apply thread, after the new state is readable and before
  // the next Publish. If the MvccStore object itself was swapped, pass the
  // new one: the call waits for any storage read in flight, after which
  // the old object may be destroyed.
  void OnStoreReplaced(const MvccStore* new_store = nullptr);

  // `wake` is called (from hub threads, without hub locks) whenever outputs
  // were queued on the stream; it must not block for long.
  std::shared_ptr<WatchStream> OpenStream(std::function<void()> wake);

  // The revision every synced watcher has been matched up to.
  int64_t revision();
  // Open streams, their watchers, and the watchers catching up from
  // storage (etcd's watch_stream_total, watcher_total, slow_watcher_total).
  struct Counts {
    size_t streams = 0;
    size_t watchers = 0;
    size_t unsynced = 0;
  };
  Counts GetCounts();
  const WatchOptions& options() const { return options_; }

 private:
  friend class WatchStream;
  struct Watcher {
    WatchStream* stream;
    int64_t id;
    std::string key;
    std::string range_end;  // as in WatchSpec
    bool prev_kv, no_put, no_delete, progress_notify, fragment;
    // Events below it are not for this watcher (future start revisions).
    int64_t min_revision;
    bool synced = false;
    // Unsynced: the next revision to read from storage.
    int64_t next_revision = 0;
    // Bumped whenever catch-up state changes under it.
    uint64_t generation = 0;
    // progress_notify: nothing was sent since the last report.
    bool idle = true;
    // Dispatch's scratch: index of this watcher's output, or -1.
    int hit = -1;
    bool Matches(const mvccpb::Event& ev) const;
  };

  void DispatchLoop();
  void CatchUpLoop();
  void Dispatch(const std::shared_ptr<EventBatch>& batch);
  // Queues a batch for the dispatcher (or drops it, see overflowed_).
  void Enqueue(std::shared_ptr<EventBatch> batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  void AddSynced(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveSynced(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MakeUnsynced(Watcher* w, int64_t next_revision)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveWatcher(Watcher* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One catch-up step for one watcher; true if it made progress.
  // Looks the watcher up again, since it may vanish while mu_ is released.
  bool CatchUpOne(WatchStream* stream, int64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Watcher* Find(WatchStream* stream, int64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportProgress() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // A leaf lock: held only around reads of the store (so OnStoreReplaced
  // can swap the pointer safely).
  mutable absl::Mutex store_mu_;
  const MvccStore* store_ ABSL_GUARDED_BY(store_mu_);
  const WatchOptions options_;

  absl::Mutex queue_mu_;
  std::deque<std::shared_ptr<EventBatch>> queue_ ABSL_GUARDED_BY(queue_mu_);
  // Batches were dropped; the last dropped revision.
  size_t queued_bytes_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool overflowed_ ABSL_GUARDED_BY(queue_mu_) = false;
  int64_t overflow_revision_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool replaced_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  // The dispatcher took a batch or a resync off the queue and has not yet
  // finished it (Publish must not move the revision meanwhile).
  bool dispatching_ ABSL_GUARDED_BY(queue_mu_) = false;

  absl::Mutex mu_ ABSL_ACQUIRED_AFTER(queue_mu_);
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  struct StreamEntry {
    std::shared_ptr<WatchStream> stream;
    // Node-based: Watcher addresses are stable while it exists.
    std::map<int64_t, Watcher> watchers;
  };
  std::map<WatchStream*, StreamEntry> streams_ ABSL_GUARDED_BY(mu_);
  // Watchers in all streams' maps; changed under mu_, read without it by
  // Publish, so the apply thread does not wait for mu_ to learn there are
  // watchers.
  std::atomic<size_t> watcher_count_{0};
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  // OnStoreReplaced's store revision, for the dispatcher.
  int64_t replaced_revision_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Synced single-key watchers by key; synced range watchers.
  std::multimap<std::string, Watcher*> synced_keys_ ABSL_GUARDED_BY(mu_);
  std::set<Watcher*> synced_ranges_ ABSL_GUARDED_BY(mu_);
  std::set<Watcher*> unsynced_ ABSL_GUARDED_BY(mu_);
  absl::CondVar catchup_cv_;
  bool stop_catchup_ ABSL_GUARDED_BY(mu_) = false;

  std::thread dispatcher_;
  std::thread catchup_;
};

}  // namespace lockd::kv

#endif  // LOCKD_KV_WATCH_HUB_H_
