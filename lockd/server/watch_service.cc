#include "lockd/server/watch_service.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lockd/util/clock.h"

namespace lockd {
namespace {

// Consecutive event outputs of one watcher are merged into one response up
// to this many bytes of events.
constexpr size_t kMergeBytesMax = 1 << 20;
// A stream writes its responses in rounds: one encoding of everything the
// hub queued, then the writes. A round of at least kBusyRoundResponses
// responses (a stream serving many watchers under a steady stream of
// events) is followed by the next no sooner than kBusyRoundInterval after
// it began: each watcher's events of that time then leave in one response
// instead of one per revision. Per-response work (gRPC's on both ends)
// dominates a watch's cost, so under such fan-out this delivers more events
// with the same CPU, at up to kBusyRoundInterval more latency; etcd batches
// its overloaded watchers likewise. Smaller rounds, and a stream that was
// quiet for the interval, are never held.
constexpr size_t kBusyRoundResponses = 64;
constexpr absl::Duration kBusyRoundInterval = absl::Milliseconds(20);
// etcd fragments at --max-request-bytes plus gRPC's overhead allowance.
constexpr size_t kGrpcOverheadBytes = 512 * 1024;

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

grpc::ByteBuffer ToByteBuffer(std::string bytes) {
  grpc::Slice slice(std::move(bytes));
  return grpc::ByteBuffer(&slice, 1);
}

bool ParseRequest(const grpc::ByteBuffer& buf,
                  etcdserverpb::WatchRequest* req) {
  std::vector<grpc::Slice> slices;
  if (!buf.Dump(&slices).ok()) return false;
  if (slices.size() == 1) {
    return req->ParseFromArray(slices[0].begin(),
                               static_cast<int>(slices[0].size()));
  }
  std::string all;
  for (const grpc::Slice& s : slices) {
    all.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return req->ParseFromString(all);
}

// One response being assembled: events of one watcher (pointers into the
// hub's shared, immutable batches, kept alive by `batches`).
struct EventsMessage {
  int64_t watch_id = 0;
  int64_t revision = 0;
  bool fragment = false;
  size_t bytes = 0;
  absl::InlinedVector<const std::string*, 4> events;
  absl::InlinedVector<std::shared_ptr<const kv::EventBatch>, 2> batches;
};

uint8_t* PutVarint(uint8_t* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<uint8_t>(v);
  return p;
}

}  // namespace

class WatchReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  WatchReactor(WatchService* service, grpc::CallbackServerContext* ctx)
      : service_(service), ctx_(ctx) {
    service_->open_streams_.fetch_add(1);
    stream_ = service_->hub_->OpenStream([this] { MaybeWrite(); });
    if (std::optional<grpc::Status> refused = service_->Register(this)) {
      End(*refused);
      return;
    }
    StartRead(&request_);
  }

  // Ends the stream with `status` (after a write in flight completes).
  void End(const grpc::Status& status) {
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      if (!end_status_.has_value()) end_status_ = status;
      finishing_ = true;
      finish = ShouldFinishLocked();
    }
    if (finish) FinishStream();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side (or went away): as etcd, the stream
      // ends.
      bool finish;
      {
        absl::MutexLock lock(&mu_);
        finishing_ = true;
        finish = ShouldFinishLocked();
      }
      if (finish) FinishStream();
      return;
    }
    etcdserverpb::WatchRequest req;
    if (ParseRequest(request_, &req)) Handle(req);
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        finishing_ = true;
        failed_ = true;
      } else if (!out_.empty()) {
        out_.pop_front();
      }
      WriteNextLocked();
      finish = ShouldFinishLocked();
    }
    // Outside the lock: OnDone (which deletes this) may follow at once.
    if (finish) FinishStream();
  }

  void OnDone() override {
    service_->Unregister(this);
    stream_->Close();
    service_->open_streams_.fetch_sub(1);
    delete this;
  }

 private:
  void Handle(const etcdserverpb::WatchRequest& req) {
    switch (req.request_union_case()) {
      case etcdserverpb::WatchRequest::kCreateRequest: {
        const auto& c = req.create_request();
        kv::WatchSpec spec;
        spec.watch_id = c.watch_id();
        spec.key = c.key();
        spec.range_end = c.range_end();
        spec.start_revision = c.start_revision();
        spec.prev_kv = c.prev_kv();
        spec.progress_notify = c.progress_notify();
        spec.fragment = c.fragment();
        for (int f : c.filters()) {
          if (f == etcdserverpb::WatchCreateRequest::NOPUT) spec.no_put = true;
          if (f == etcdserverpb::WatchCreateRequest::NODELETE) {
            spec.no_delete = true;
          }
        }
        absl::StatusOr<int64_t> id = stream_->Create(spec);
        if (!id.ok()) {
          // etcd answers a failed create with created + canceled, id -1.
          kv::WatchOutput out;
          out.kind = kv::WatchOutput::Kind::kCreated;
          out.watch_id = -1;
          out.revision = service_->hub_->revision();
          out.cancel_reason = std::string(id.status().message());
          absl::MutexLock lock(&mu_);
          // After what the hub queued before, to keep the stream's order.
          stream_->Take(&pending_);
          pending_.push_back(std::move(out));
          WriteNextLocked();
        }
        break;
      }
      case etcdserverpb::WatchRequest::kCancelRequest:
        stream_->Cancel(req.cancel_request().watch_id());
        break;
      case etcdserverpb::WatchRequest::kProgressRequest:
        stream_->RequestProgress();
        break;
      default:
        break;  // as etcd: an unknown request does not end the stream
    }
  }

  // A held round may start (see kBusyRoundInterval).
  void OnAlarm() {
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      alarm_pending_ = false;
      WriteNextLocked();
      finish = ShouldFinishLocked();
    }
    if (finish) FinishStream();
  }

  // The hub queued outputs (or a write finished).
  void MaybeWrite() {
    absl::MutexLock lock(&mu_);
    WriteNextLocked();
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finishing_) return;
    if (out_.empty()) {
      if (alarm_pending_) return;  // the alarm starts the next round
      if (round_responses_ >= kBusyRoundResponses) {
        const absl::Time next = round_started_ + kBusyRoundInterval;
        const absl::Time now = MonotonicNow();
        if (now < next) {
          alarm_pending_ = true;
          alarm_ = std::make_unique<grpc::Alarm>();
          alarm_->Set(std::chrono::system_clock::now() +
                          absl::ToChronoNanoseconds(next - now),
                      [this](bool) { OnAlarm(); });
          return;
        }
      }
      stream_->Take(&pending_);
      if (pending_.empty()) return;
      Encode();
      round_started_ = MonotonicNow();
      round_responses_ = out_.size();
    }
    if (out_.empty()) return;
    writing_ = true;
    // All but the last response of a burst may wait in gRPC's buffer, so a
    // burst leaves in a few large socket writes instead of one each. Never
    // on a stream's first write: gRPC 1.51 can then fail the write and leave
    // the stream hanging (seen here: OnWriteDone(false), client never told).
    grpc::WriteOptions options;
    if (wrote_any_ && out_.size() > 1) options.set_buffer_hint();
    wrote_any_ = true;
    StartWrite(&out_.front(), options);
  }

  // True once, when the stream should end now.
  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finishing_ || writing_ || finished_ || alarm_pending_) return false;
    finished_ = true;
    return true;
  }
  void FinishStream() {
    bool failed;
    std::optional<grpc::Status> end;
    {
      absl::MutexLock lock(&mu_);
      failed = failed_;
      end = end_status_;
    }
    if (end.has_value()) {
      Finish(*end);
      return;
    }
    Finish(failed ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                 "watch stream write failed")
                  : grpc::Status::OK);
  }

  // The serialized header for `revision`, cached: consecutive responses
  // mostly share it.
  const std::string& HeaderBytes(int64_t revision)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint64_t term = service_->node_->term();
    if (revision != header_revision_ || term != header_term_ ||
        header_bytes_.empty()) {
      header_bytes_ = Header(revision).SerializeAsString();
      header_revision_ = revision;
      header_term_ = term;
    }
    return header_bytes_;
  }

  etcdserverpb::ResponseHeader Header(int64_t revision) const {
    etcdserverpb::ResponseHeader h;
    h.set_cluster_id(service_->config_->cluster_id);
    h.set_member_id(service_->config_->member_id);
    h.set_revision(revision);
    h.set_raft_term(service_->node_->term());
    return h;
  }

  // Turns pending_ into encoded responses in out_.
  void Encode() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Responses in order; events of a watcher merge into its open message
    // until one of its control outputs (or a broadcast) closes it.
    std::vector<std::variant<EventsMessage, kv::WatchOutput>> msgs;
    absl::flat_hash_map<int64_t, size_t> open;
    for (kv::WatchOutput& o : pending_) {
      if (o.kind == kv::WatchOutput::Kind::kEvents) {
        auto it = open.find(o.watch_id);
        EventsMessage* m = nullptr;
        if (it != open.end()) {
          m = &std::get<EventsMessage>(msgs[it->second]);
          if (m->bytes + o.bytes > kMergeBytesMax) m = nullptr;
        }
        if (m == nullptr) {
          open[o.watch_id] = msgs.size();
          msgs.emplace_back(EventsMessage{});
          m = &std::get<EventsMessage>(msgs.back());
          m->watch_id = o.watch_id;
          m->fragment = o.fragment;
        }
        m->revision = std::max(m->revision, o.revision);
        m->bytes += o.bytes;
        for (uint32_t i : o.indices) {
          const std::string& with_prev = o.batch->with_prev[i];
          m->events.push_back(o.prev_kv && !with_prev.empty()
                                  ? &with_prev
                                  : &o.batch->plain[i]);
        }
        m->batches.push_back(std::move(o.batch));
        continue;
      }
      if (o.watch_id == -1 && o.kind == kv::WatchOutput::Kind::kProgress) {
        open.clear();
      } else {
        open.erase(o.watch_id);
      }
      msgs.emplace_back(std::move(o));
    }
    pending_.clear();
    for (auto& msg : msgs) {
      if (auto* m = std::get_if<EventsMessage>(&msg)) {
        EncodeEvents(*m);
      } else {
        EncodeControl(std::get<kv::WatchOutput>(msg));
      }
    }
  }

  void EncodeControl(const kv::WatchOutput& o)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    etcdserverpb::WatchResponse r;
    *r.mutable_header() = Header(o.revision);
    r.set_watch_id(o.watch_id);
    switch (o.kind) {
      case kv::WatchOutput::Kind::kCreated:
        r.set_created(true);
        if (!o.cancel_reason.empty()) {
          r.set_canceled(true);
          r.set_cancel_reason(o.cancel_reason);
        }
        break;
      case kv::WatchOutput::Kind::kCanceled:
        r.set_canceled(true);
        break;
      case kv::WatchOutput::Kind::kCompacted:
        r.set_canceled(true);
        r.set_compact_revision(o.compact_revision);
        // etcd's header carries no revision here (its compacted-watch
        // response has none to give).
        r.mutable_header()->set_revision(0);
        break;
      default:
        break;
    }
    out_.push_back(ToByteBuffer(r.SerializeAsString()));
  }

  // WatchResponse {header = 1, watch_id = 2, fragment = 7, events = 11},
  // written by hand around the pre-serialized events, straight into the
  // slice gRPC sends.
  void EncodeEvents(const EventsMessage& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string& header = HeaderBytes(m.revision);
    const size_t head_size =
        1 + VarintSize(header.size()) + header.size() +
        (m.watch_id != 0 ? 1 + VarintSize(static_cast<uint64_t>(m.watch_id))
                         : 0);
    const size_t limit =
        service_->config_->max_request_bytes + kGrpcOverheadBytes;
    // As etcd: split only when asked, when too large, and when there is
    // more than one event; each piece holds at least one event and stays
    // under the limit when it can. All pieces but the last are marked.
    struct Piece {
      size_t begin, end, bytes;
    };
    absl::InlinedVector<Piece, 1> pieces;
    size_t begin = 0, size = head_size + 2;
    for (size_t i = 0; i < m.events.size(); ++i) {
      const size_t add =
          1 + VarintSize(m.events[i]->size()) + m.events[i]->size();
      if (m.fragment && i > begin && size + add >= limit) {
        pieces.push_back({begin, i, size});
        begin = i;
        size = head_size + 2;
      }
      size += add;
    }
    pieces.push_back({begin, m.events.size(), size});
    for (size_t p = 0; p < pieces.size(); ++p) {
      const bool more = p + 1 < pieces.size();
      const size_t bytes = pieces[p].bytes - (more ? 0 : 2);
      grpc::Slice slice(bytes);
      uint8_t* const start = const_cast<uint8_t*>(slice.begin());
      uint8_t* w = start;
      *w++ = 0x0a;
      w = PutVarint(w, header.size());
      std::memcpy(w, header.data(), header.size());
      w += header.size();
      if (m.watch_id != 0) {
        *w++ = 0x10;
        w = PutVarint(w, static_cast<uint64_t>(m.watch_id));
      }
      if (more) {
        *w++ = 0x38;
        *w++ = 1;
      }
      for (size_t i = pieces[p].begin; i < pieces[p].end; ++i) {
        const std::string& e = *m.events[i];
        *w++ = 0x5a;
        w = PutVarint(w, e.size());
        std::memcpy(w, e.data(), e.size());
        w += e.size();
      }
      if (static_cast<size_t>(w - start) != bytes) {
        std::fprintf(stderr, "watch: response size miscomputed\n");
        std::abort();
      }
      out_.emplace_back(&slice, 1);
    }
  }

  WatchService* const service_;
  grpc::CallbackServerContext* const ctx_;
  std::shared_ptr<kv::WatchStream> stream_;
  grpc::ByteBuffer request_;
  absl::Mutex mu_;
  std::vector<kv::WatchOutput> pending_ ABSL_GUARDED_BY(mu_);
  // Encoded responses; front() is being written while writing_.
  std::deque<grpc::ByteBuffer> out_ ABSL_GUARDED_BY(mu_);
  std::string header_bytes_ ABSL_GUARDED_BY(mu_);
  int64_t header_revision_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t header_term_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool wrote_any_ ABSL_GUARDED_BY(mu_) = false;
  // The current round (see kBusyRoundInterval), and the alarm that starts
  // a held one; the stream does not finish while it is pending.
  absl::Time round_started_ ABSL_GUARDED_BY(mu_);
  size_t round_responses_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
  bool alarm_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  // Set by End(): the status the stream finishes with.
  std::optional<grpc::Status> end_status_ ABSL_GUARDED_BY(mu_);
};

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
WatchService::Watch(grpc::CallbackServerContext* ctx) {
  return new WatchReactor(this, ctx);
}

std::optional<grpc::Status> WatchService::Register(WatchReactor* r) {
  absl::MutexLock lock(&streams_mu_);
  streams_.insert(r);
  return refuse_;
}

namespace {
// The service whose EndAll runs on this thread (it holds streams_mu_).
thread_local WatchService* ending_streams = nullptr;
}  // namespace

void WatchService::Unregister(WatchReactor* r) {
  // Finishing a stream may run its OnDone at once, on the thread that
  // finished it: inside EndAll, which holds the lock already.
  if (ending_streams == this) {
    streams_.erase(r);
    return;
  }
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(r);
}

int WatchService::EndAllForGood(const grpc::Status& status) {
  {
    absl::MutexLock lock(&streams_mu_);
    refuse_ = status;
  }
  return EndAll(status);
}

int WatchService::EndAll(const grpc::Status& status) {
  // A reactor is deleted only after OnDone, which unregisters it under
  // streams_mu_ first, so every reactor in the set is alive while the lock
  // is held.
  absl::MutexLock lock(&streams_mu_);
  const std::vector<WatchReactor*> open(streams_.begin(), streams_.end());
  ending_streams = this;
  for (WatchReactor* r : open) r->End(status);
  ending_streams = nullptr;
  return static_cast<int>(open.size());
}

}  // namespace lockd
