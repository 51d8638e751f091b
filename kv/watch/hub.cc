#include "kv/watch/hub.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "lockd/util/clock.h"
#include "lockd/util/thread_name.h"

namespace lockd::kv {
namespace {

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void AppendBytesField(std::string* out, int field, const std::string& bytes) {
  AppendVarint(out, (static_cast<uint64_t>(field) << 3) | 2);
  AppendVarint(out, bytes.size());
  out->append(bytes);
}

int64_t RevisionOf(const mvccpb::Event& ev) { return ev.kv().mod_revision(); }

}  // namespace

void EventBatch::Serialize(bool with_prev_kv) {
  // mvccpb.Event is {type = 1, kv = 2, prev_kv = 3}; the with-prev form is
  // the plain form plus field 3, so each KeyValue is serialized once.
  plain.resize(events.size());
  with_prev.resize(events.size());
  std::string kv_bytes;
  for (size_t i = 0; i < events.size(); ++i) {
    const mvccpb::Event& ev = events[i];
    std::string& p = plain[i];
    p.clear();
    if (ev.type() != mvccpb::Event::PUT) {
      AppendVarint(&p, 1 << 3);
      AppendVarint(&p, static_cast<uint64_t>(ev.type()));
    }
    kv_bytes.clear();
    ev.kv().SerializeToString(&kv_bytes);
    AppendBytesField(&p, 2, kv_bytes);
    with_prev[i].clear();
    if (with_prev_kv && ev.has_prev_kv()) {
      with_prev[i] = p;
      kv_bytes.clear();
      ev.prev_kv().SerializeToString(&kv_bytes);
      AppendBytesField(&with_prev[i], 3, kv_bytes);
    }
  }
}

bool WatchHub::Watcher::Matches(const mvccpb::Event& ev) const {
  if (RevisionOf(ev) < min_revision) return false;
  if (ev.type() == mvccpb::Event::PUT ? no_put : no_delete) return false;
  const std::string& k = ev.kv().key();
  if (range_end.empty()) return k == key;
  if (k < key) return false;
  if (range_end.size() == 1 && range_end[0] == '\0') return true;
  return k < range_end;
}

// ---------------------------------------------------------------------------
// WatchStream

absl::StatusOr<int64_t> WatchStream::Create(const WatchSpec& spec) {
  bool from_key = spec.range_end.size() == 1 && spec.range_end[0] == '\0';
  if (!spec.range_end.empty() && !from_key && spec.key >= spec.range_end) {
    return ErrEmptyWatcherRange();
  }
  int64_t id;
  {
    absl::MutexLock lock(&hub_->mu_);
    if (closed_) return absl::FailedPreconditionError("watch stream closed");
    auto entry = hub_->streams_.find(this);
    if (entry == hub_->streams_.end()) {
      return absl::FailedPreconditionError("watch stream closed");
    }
    auto& watchers = entry->second.watchers;
    if (watchers.size() >= hub_->options_.watchers_per_stream_max) {
      return ErrTooManyWatchers();
    }
    if (spec.watch_id == 0) {
      while (watchers.count(next_id_) > 0) ++next_id_;
      id = next_id_++;
    } else {
      id = spec.watch_id;
      if (watchers.count(id) > 0) return ErrWatcherDuplicateID();
    }
    WatchHub::Watcher& w = watchers[id];
    hub_->watcher_count_.fetch_add(1, std::memory_order_relaxed);
    w.stream = this;
    w.id = id;
    w.key = spec.key;
    w.range_end = spec.range_end;
    w.prev_kv = spec.prev_kv;
    w.no_put = spec.no_put;
    w.no_delete = spec.no_delete;
    w.progress_notify = spec.progress_notify;
    w.fragment = spec.fragment;
    const int64_t dispatched = hub_->revision_;
    // "Now" is the store's revision, which may be ahead of the dispatcher:
    // a client that saw its write acknowledged and then watches from now
    // must not get that write as an event (as with etcd). Committed
    // revisions above `dispatched` are still on their way to the
    // dispatcher, so a synced watcher gets them, filtered by min_revision.
    int64_t store_revision;
    {
      absl::ReaderMutexLock store_lock(&hub_->store_mu_);
      store_revision = hub_->store_->revision();
    }
    const int64_t now = std::max(dispatched, store_revision);
    WatchOutput created;
    created.kind = WatchOutput::Kind::kCreated;
    created.watch_id = id;
    created.revision = now;
    Push(std::move(created), /*force=*/true);
    const int64_t start =
        spec.start_revision == 0 ? now + 1 : spec.start_revision;
    w.min_revision = start;
    if (start > dispatched) {
      hub_->AddSynced(&w);
    } else {
      hub_->MakeUnsynced(&w, start);
    }
  }
  Wake();
  return id;
}

bool WatchStream::Cancel(int64_t watch_id) {
  {
    absl::MutexLock lock(&hub_->mu_);
    WatchHub::Watcher* w = hub_->Find(this, watch_id);
    if (w == nullptr) return false;
    hub_->RemoveWatcher(w);
    absl::MutexLock qlock(&mu_);
    // Queued events of a cancelled watcher would only confuse the client.
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->watch_id == watch_id && it->kind == WatchOutput::Kind::kEvents) {
        queued_bytes_ -= it->bytes;
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    WatchOutput out;
    out.kind = WatchOutput::Kind::kCanceled;
    out.watch_id = watch_id;
    out.revision = hub_->revision_;
    queue_.push_back(std::move(out));
  }
  Wake();
  return true;
}

void WatchStream::RequestProgress() {
  {
    absl::MutexLock lock(&hub_->mu_);
    // Synced watchers have been sent everything up to the hub's revision;
    // an unsynced one only what precedes its next revision.
    int64_t rev = hub_->revision_;
    auto entry = hub_->streams_.find(this);
    if (entry != hub_->streams_.end()) {
      for (const auto& [id, w] : entry->second.watchers) {
        if (!w.synced) rev = std::min(rev, w.next_revision - 1);
      }
    }
    WatchOutput out;
    out.kind = WatchOutput::Kind::kProgress;
    out.watch_id = -1;
    out.revision = rev;
    Push(std::move(out), /*force=*/true);
  }
  Wake();
}

size_t WatchStream::Take(std::vector<WatchOutput>* out) {
  bool was_full;
  size_t n;
  {
    absl::MutexLock lock(&mu_);
    n = queue_.size();
    was_full = queued_bytes_ * 2 >= hub_->options_.stream_buffer_bytes_max;
    for (WatchOutput& o : queue_) out->push_back(std::move(o));
    queue_.clear();
    queued_bytes_ = 0;
  }
  // A watcher of this stream may be waiting for room to catch up.
  if (was_full) hub_->catchup_cv_.Signal();
  return n;
}

void WatchStream::Close() {
  std::shared_ptr<WatchStream> keep;
  {
    absl::MutexLock lock(&hub_->mu_);
    closed_ = true;
    auto entry = hub_->streams_.find(this);
    if (entry != hub_->streams_.end()) {
      keep = entry->second.stream;
      std::vector<WatchHub::Watcher*> all;
      for (auto& [id, w] : entry->second.watchers) all.push_back(&w);
      for (WatchHub::Watcher* w : all) hub_->RemoveWatcher(w);
      hub_->streams_.erase(entry);
    }
  }
  {
    absl::MutexLock lock(&mu_);
    queue_.clear();
    queued_bytes_ = 0;
  }
  absl::MutexLock lock(&wake_mu_);
  wake_ = nullptr;
}

size_t WatchStream::watcher_count() {
  absl::MutexLock lock(&hub_->mu_);
  auto entry = hub_->streams_.find(this);
  return entry == hub_->streams_.end() ? 0 : entry->second.watchers.size();
}

bool WatchStream::Push(WatchOutput out, bool force) {
  absl::MutexLock lock(&mu_);
  if (!force && !queue_.empty() &&
      queued_bytes_ + out.bytes > hub_->options_.stream_buffer_bytes_max) {
    return false;
  }
  queued_bytes_ += out.bytes;
  queue_.push_back(std::move(out));
  return true;
}

void WatchStream::PushMany(std::vector<WatchOutput>* outs,
                           const std::vector<size_t>& order,
                           std::vector<bool>* refused) {
  absl::MutexLock lock(&mu_);
  for (size_t i : order) {
    WatchOutput& out = (*outs)[i];
    if (!queue_.empty() &&
        queued_bytes_ + out.bytes > hub_->options_.stream_buffer_bytes_max) {
      (*refused)[i] = true;
      continue;
    }
    queued_bytes_ += out.bytes;
    queue_.push_back(std::move(out));
  }
}

bool WatchStream::HasRoom(size_t bytes) {
  absl::MutexLock lock(&mu_);
  return queued_bytes_ + bytes <= hub_->options_.stream_buffer_bytes_max / 2;
}

void WatchStream::Wake() {
  absl::MutexLock lock(&wake_mu_);
  if (wake_) wake_();
}

// ---------------------------------------------------------------------------
// WatchHub

WatchHub::WatchHub(const MvccStore* store, WatchOptions options)
    : store_(store), options_(options) {
  revision_ = store->revision();
}

WatchHub::~WatchHub() { Stop(); }

void WatchHub::Start() {
  dispatcher_ = std::thread([this] { DispatchLoop(); });
  catchup_ = std::thread([this] { CatchUpLoop(); });
}

void WatchHub::Stop() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
  }
  {
    absl::MutexLock lock(&mu_);
    stop_catchup_ = true;
  }
  catchup_cv_.SignalAll();
  if (dispatcher_.joinable()) dispatcher_.join();
  if (catchup_.joinable()) catchup_.join();
}

void WatchHub::Publish(std::vector<mvccpb::Event> events) {
  if (events.empty()) return;
  auto batch = std::make_shared<EventBatch>();
  batch->events = std::move(events);
  {
    absl::MutexLock lock(&queue_mu_);
    if (stopping_) return;
    const bool idle =
        queue_.empty() && !dispatching_ && !overflowed_ && !replaced_;
    if (idle && watcher_count_.load(std::memory_order_relaxed) == 0) {
      // Nothing is on its way to the dispatcher: with no watcher to hand
      // the events to, it would only move its revision on, so do that here
      // and spare waking it (one wake-up per apply on every member). The
      // count is checked again under mu_: a watcher may have come meanwhile.
      absl::MutexLock hub_lock(&mu_);
      if (watcher_count_.load(std::memory_order_relaxed) == 0) {
        revision_ = std::max(revision_, RevisionOf(batch->events.back()));
        return;
      }
    }
    const size_t watchers = watcher_count_.load(std::memory_order_relaxed);
    if (!idle || options_.inline_dispatch_max == 0 ||
        batch->events.size() * watchers > options_.inline_dispatch_max) {
      Enqueue(std::move(batch));
      return;
    }
    // Dispatched here (see hub.h); the dispatcher stays asleep meanwhile,
    // and no batch can be published behind this one until it returns (only
    // the apply loop publishes), so the order holds.
    dispatching_ = true;
  }
  Dispatch(batch);
  absl::MutexLock lock(&queue_mu_);
  dispatching_ = false;
}

void WatchHub::Enqueue(std::shared_ptr<EventBatch> batch) {
  size_t bytes = 0;
  for (const mvccpb::Event& ev : batch->events) {
    bytes += ev.kv().key().size() + ev.kv().value().size() +
             ev.prev_kv().value().size() + 64;
  }
  batch->approx_bytes = bytes;
  if (overflowed_ || queue_.size() >= options_.hub_queue_batches_max ||
      queued_bytes_ + bytes > options_.hub_queue_bytes_max) {
    // Dropping is safe: the store has the events; every synced watcher
    // will read them from there (the dispatcher arranges it once it has
    // drained what it was given before).
    overflowed_ = true;
    overflow_revision_ = RevisionOf(batch->events.back());
    return;
  }
  queued_bytes_ += bytes;
  queue_.push_back(std::move(batch));
}

void WatchHub::OnStoreReplaced(const MvccStore* new_store) {
  int64_t store_revision;
  {
    absl::MutexLock store_lock(&store_mu_);
    if (new_store != nullptr) store_ = new_store;
    store_revision = store_->revision();
  }
  absl::MutexLock lock(&queue_mu_);
  queue_.clear();
  queued_bytes_ = 0;
  overflowed_ = false;
  replaced_ = true;
  replaced_revision_ = store_revision;
}

std::shared_ptr<WatchStream> WatchHub::OpenStream(std::function<void()> wake) {
  std::shared_ptr<WatchStream> s(new WatchStream(this, std::move(wake)));
  absl::MutexLock lock(&mu_);
  streams_[s.get()].stream = s;
  return s;
}

WatchHub::Counts WatchHub::GetCounts() {
  absl::MutexLock lock(&mu_);
  Counts c;
  c.streams = streams_.size();
  c.watchers = watcher_count_.load(std::memory_order_relaxed);
  c.unsynced = unsynced_.size();
  return c;
}

int64_t WatchHub::revision() {
  absl::MutexLock lock(&mu_);
  return revision_;
}

void WatchHub::DispatchLoop() {
  SetThreadName("watch-dispatch");
  while (true) {
    // Either a batch to dispatch, or (none) a resync to this revision.
    std::shared_ptr<EventBatch> batch;
    int64_t resync_revision = 0;
    {
      absl::MutexLock lock(&queue_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return stopping_ || replaced_ || overflowed_ || !queue_.empty();
      };
      queue_mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      if (replaced_) {
        replaced_ = false;
        resync_revision = replaced_revision_;
      } else if (!queue_.empty()) {
        batch = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= batch->approx_bytes;
      } else {
        overflowed_ = false;
        resync_revision = overflow_revision_;
      }
      dispatching_ = true;
    }
    if (batch != nullptr) {
      Dispatch(batch);
    } else {
      absl::MutexLock lock(&mu_);
      std::vector<Watcher*> synced(synced_ranges_.begin(),
                                   synced_ranges_.end());
      for (auto& [key, w] : synced_keys_) synced.push_back(w);
      for (Watcher* w : synced) {
        MakeUnsynced(w, std::max(w->min_revision, revision_ + 1));
      }
      revision_ = resync_revision;
    }
    absl::MutexLock lock(&queue_mu_);
    dispatching_ = false;
  }
}

void WatchHub::Dispatch(const std::shared_ptr<EventBatch>& batch) {
  batch->Serialize(/*with_prev_kv=*/true);
  std::vector<std::shared_ptr<WatchStream>> wake;
  {
    absl::MutexLock lock(&mu_);
    const int64_t first = RevisionOf(batch->events.front());
    const int64_t last = RevisionOf(batch->events.back());
    // Events at or below revision_ were already read from storage (after a
    // resync); delivering them again would duplicate them.
    const int64_t floor = revision_;
    // One output per watcher hit, built in place (Watcher::hit indexes it).
    std::vector<Watcher*> hit_watchers;
    std::vector<WatchOutput> outs;
    auto hit = [&](Watcher* w, uint32_t i) {
      if (w->hit < 0) {
        w->hit = static_cast<int>(outs.size());
        hit_watchers.push_back(w);
        WatchOutput& out = outs.emplace_back();
        out.kind = WatchOutput::Kind::kEvents;
        out.watch_id = w->id;
        out.revision = last;
        out.prev_kv = w->prev_kv;
        out.fragment = w->fragment;
        out.batch = batch;
      }
      WatchOutput& out = outs[w->hit];
      out.indices.push_back(i);
      out.bytes += (w->prev_kv && !batch->with_prev[i].empty())
                       ? batch->with_prev[i].size()
                       : batch->plain[i].size();
    };
    for (size_t i = 0; i < batch->events.size(); ++i) {
      const mvccpb::Event& ev = batch->events[i];
      if (RevisionOf(ev) <= floor) continue;
      auto range = synced_keys_.equal_range(ev.kv().key());
      for (auto it = range.first; it != range.second; ++it) {
        if (it->second->Matches(ev)) hit(it->second, static_cast<uint32_t>(i));
      }
      for (Watcher* w : synced_ranges_) {
        if (w->Matches(ev)) hit(w, static_cast<uint32_t>(i));
      }
    }
    // One lock per stream for all its watchers' outputs.
    std::map<WatchStream*, std::vector<size_t>> by_stream;
    for (size_t i = 0; i < hit_watchers.size(); ++i) {
      hit_watchers[i]->hit = -1;
      by_stream[hit_watchers[i]->stream].push_back(i);
    }
    std::vector<bool> refused(outs.size(), false);
    for (auto& [stream, order] : by_stream) {
      stream->PushMany(&outs, order, &refused);
      bool any = false;
      for (size_t i : order) {
        Watcher* w = hit_watchers[i];
        if (refused[i]) {
          // Its stream is full: it reads this batch (and what follows)
          // from storage once the stream has drained.
          MakeUnsynced(w, std::max({first, floor + 1, w->min_revision}));
        } else {
          w->idle = false;
          any = true;
        }
      }
      if (any) wake.push_back(streams_[stream].stream);
    }
    revision_ = std::max(revision_, last);
  }
  for (auto& stream : wake) stream->Wake();
}

void WatchHub::AddSynced(Watcher* w) {
  unsynced_.erase(w);
  w->synced = true;
  w->generation = next_generation_++;
  if (w->range_end.empty()) {
    synced_keys_.emplace(w->key, w);
  } else {
    synced_ranges_.insert(w);
  }
}

void WatchHub::RemoveSynced(Watcher* w) {
  if (!w->synced) return;
  w->synced = false;
  if (w->range_end.empty()) {
    auto range = synced_keys_.equal_range(w->key);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == w) {
        synced_keys_.erase(it);
        break;
      }
    }
  } else {
    synced_ranges_.erase(w);
  }
}

void WatchHub::MakeUnsynced(Watcher* w, int64_t next_revision) {
  RemoveSynced(w);
  w->next_revision = next_revision;
  w->generation = next_generation_++;
  unsynced_.insert(w);
  catchup_cv_.Signal();
}

void WatchHub::RemoveWatcher(Watcher* w) {
  RemoveSynced(w);
  unsynced_.erase(w);
  auto entry = streams_.find(w->stream);
  if (entry != streams_.end() && entry->second.watchers.erase(w->id) > 0) {
    watcher_count_.fetch_sub(1, std::memory_order_relaxed);
  }
}

WatchHub::Watcher* WatchHub::Find(WatchStream* stream, int64_t id) {
  auto entry = streams_.find(stream);
  if (entry == streams_.end()) return nullptr;
  auto it = entry->second.watchers.find(id);
  return it == entry->second.watchers.end() ? nullptr : &it->second;
}

void WatchHub::CatchUpLoop() {
  SetThreadName("watch-catchup");
  absl::MutexLock lock(&mu_);
  absl::Time next_progress = MonotonicNow() + options_.progress_interval;
  while (!stop_catchup_) {
    bool progressed = false;
    std::vector<std::pair<WatchStream*, int64_t>> todo;
    todo.reserve(unsynced_.size());
    for (Watcher* w : unsynced_) todo.emplace_back(w->stream, w->id);
    for (const auto& [stream, id] : todo) {
      if (stop_catchup_) return;
      progressed |= CatchUpOne(stream, id);
    }
    if (MonotonicNow() >= next_progress) {
      ReportProgress();
      next_progress = MonotonicNow() + options_.progress_interval;
    }
    if (!progressed) {
      // Woken by new unsynced watchers or a stream that drained; the
      // timeout covers the progress report and missed signals.
      absl::Duration wait =
          std::min(absl::Milliseconds(50), next_progress - MonotonicNow());
      catchup_cv_.WaitWithTimeout(&mu_, std::max(wait, absl::ZeroDuration()));
    }
  }
}

bool WatchHub::CatchUpOne(WatchStream* stream, int64_t id) {
  Watcher* w = Find(stream, id);
  if (w == nullptr || w->synced) return false;
  if (!stream->HasRoom(0)) return false;
  const int64_t cut = revision_;
  const int64_t from = w->next_revision;
  if (from > cut) {
    w->min_revision = std::max(w->min_revision, from);
    AddSynced(w);
    return true;
  }
  const Watcher spec = *w;
  std::shared_ptr<WatchStream> keep = streams_[stream].stream;

  // Read without the hub lock: storage I/O must not stall the dispatcher.
  mu_.Unlock();
  auto batch = std::make_shared<EventBatch>();
  std::vector<mvccpb::Event> events;
  int64_t next = from;
  absl::Status s;
  int64_t compact_revision = 0;
  int64_t new_next = from;
  {
    // Released before mu_ is taken again: store_mu_ is a leaf lock.
    absl::ReaderMutexLock store_lock(&store_mu_);
    s = store_->History(from, options_.catchup_events_max, &events, &next,
                        options_.catchup_bytes_max);
    compact_revision = store_->compact_revision();
    if (s.ok()) {
      bool truncated = false;
      for (mvccpb::Event& ev : events) {
        if (RevisionOf(ev) > cut) {
          truncated = true;
          break;
        }
        if (!spec.Matches(ev)) continue;
        const bool create = ev.type() == mvccpb::Event::PUT &&
                            ev.kv().create_revision() == ev.kv().mod_revision();
        if (spec.prev_kv && !create) {
          // As etcd: the key's version just before this event, if still
          // readable.
          absl::StatusOr<mvccpb::KeyValue> prev =
              store_->GetAt(ev.kv().key(), RevisionOf(ev) - 1);
          if (prev.ok()) *ev.mutable_prev_kv() = *std::move(prev);
        }
        batch->events.push_back(std::move(ev));
      }
      // Unless a limit cut the read short, it reached the end of history.
      new_next = (truncated || events.empty() || next > cut) ? cut + 1 : next;
    }
  }
  if (s.ok()) batch->Serialize(spec.prev_kv);
  mu_.Lock();

  w = Find(stream, id);
  if (w == nullptr || w->synced || w->generation != spec.generation) {
    return false;  // cancelled or changed meanwhile; the next round decides
  }
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kOutOfRange) return false;
    WatchOutput out;
    out.kind = WatchOutput::Kind::kCompacted;
    out.watch_id = id;
    out.revision = cut;
    out.compact_revision = compact_revision;
    stream->Push(std::move(out), /*force=*/true);
    RemoveWatcher(w);
  } else {
    if (!batch->events.empty()) {
      WatchOutput out;
      out.kind = WatchOutput::Kind::kEvents;
      out.watch_id = id;
      out.revision = cut;
      out.prev_kv = spec.prev_kv;
      out.fragment = spec.fragment;
      for (uint32_t i = 0; i < batch->events.size(); ++i) {
        out.indices.push_back(i);
        out.bytes += batch->with_prev[i].empty() ? batch->plain[i].size()
                                                 : batch->with_prev[i].size();
      }
      out.batch = std::move(batch);
      // Room was checked before reading; one slice may overshoot a little.
      stream->Push(std::move(out), /*force=*/true);
      w->idle = false;
    }
    w->next_revision = new_next;
    w->generation = next_generation_++;
    if (new_next == revision_ + 1) AddSynced(w);
  }
  mu_.Unlock();
  keep->Wake();
  mu_.Lock();
  return true;
}

void WatchHub::ReportProgress() {
  std::vector<std::shared_ptr<WatchStream>> wake;
  for (auto& [raw, entry] : streams_) {
    bool any = false;
    for (auto& [id, w] : entry.watchers) {
      if (!w.progress_notify) continue;
      // As etcd: only idle, synced watchers get a report.
      if (w.idle && w.synced) {
        WatchOutput out;
        out.kind = WatchOutput::Kind::kProgress;
        out.watch_id = id;
        out.revision = revision_;
        raw->Push(std::move(out), /*force=*/true);
        any = true;
      }
      w.idle = true;
    }
    if (any) wake.push_back(entry.stream);
  }
  mu_.Unlock();
  for (auto& s : wake) s->Wake();
  mu_.Lock();
}

}  // namespace lockd::kv
