// Client::Watch and Watcher: one etcd v3 watch that survives its member.
//
// The watcher's thread runs one stream at a time. The resume point is
// next_revision_: the revision after the last event handed to the callback
// (or, before any event, after the revision the first member created the
// watch at). A re-created stream starts there, and events below it are
// dropped, so a member that resends what another already delivered cannot
// cause a duplicate. A member never splits one revision's events across
// responses (etcd does only when asked to fragment, which we never ask), so
// resuming at "last revision + 1" cannot cut a transaction in half.
#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lockd/client/client.h"

namespace lockd::client {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

// etcd's ErrGRPCCompacted, as its client reports a compacted watch.
absl::Status Compacted() {
  return absl::OutOfRangeError(
      "etcdserver: mvcc: required revision has been compacted");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Watcher>> Client::Watch(
    const etcdserverpb::WatchCreateRequest& req,
    std::function<bool(const etcdserverpb::WatchResponse&)> on_events) {
  if (on_events == nullptr) {
    return absl::InvalidArgumentError("a watch needs a callback");
  }
  if (req.start_revision() > 0) {
    // A member creates a watch from a compacted revision and then ends it;
    // asking first lets Watch() itself say so, as its contract promises.
    // (Compacted in between: Wait() says so.)
    etcdserverpb::RangeRequest probe;
    probe.set_key(req.key());
    probe.set_revision(req.start_revision());
    probe.set_count_only(true);
    probe.set_serializable(true);
    absl::StatusOr<etcdserverpb::RangeResponse> r = Range(probe);
    if (!r.ok() && absl::IsOutOfRange(r.status()) &&
        r.status().message() == Compacted().message()) {
      return r.status();
    }
  }
  etcdserverpb::WatchCreateRequest create = req;
  create.clear_watch_id();
  create.clear_fragment();
  auto w = std::unique_ptr<Watcher>(
      new Watcher(this, std::move(create), std::move(on_events)));
  Watcher* raw = w.get();
  {
    absl::MutexLock lock(&raw->mu_);
    raw->next_revision_ = req.start_revision();
  }
  raw->thread_ = std::thread([raw] { raw->Run(); });
  auto created_or_done = [raw]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(raw->mu_) {
    return raw->created_ || raw->done_;
  };
  bool answered, created;
  absl::Status end;
  {
    absl::MutexLock lock(&raw->mu_);
    answered = raw->mu_.AwaitWithTimeout(absl::Condition(&created_or_done),
                                         options_.call_timeout);
    created = raw->created_;
    end = raw->end_;
  }
  if (!answered) {
    w.reset();  // cancels; a stream in progress ends at once
    return absl::DeadlineExceededError(
        absl::StrCat("no member created the watch within ",
                     absl::FormatDuration(options_.call_timeout)));
  }
  if (!created) return end;
  return w;
}

Watcher::Watcher(
    Client* client, etcdserverpb::WatchCreateRequest req,
    std::function<bool(const etcdserverpb::WatchResponse&)> on_events)
    : client_(client), req_(std::move(req)), on_events_(std::move(on_events)) {}

Watcher::~Watcher() {
  Cancel();
  if (thread_.joinable()) thread_.join();
}

void Watcher::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
}

absl::Status Watcher::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(&done_), timeout)) {
    return absl::DeadlineExceededError("the watch is still running");
  }
  return end_;
}

int64_t Watcher::next_revision() const {
  absl::MutexLock lock(&mu_);
  return next_revision_;
}

std::string Watcher::endpoint() const {
  absl::MutexLock lock(&mu_);
  return endpoint_;
}

int Watcher::streams() const {
  absl::MutexLock lock(&mu_);
  return streams_;
}

bool Watcher::Sleep(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&cancelled_), d);
  return !cancelled_;
}

void Watcher::Run() {
  const ClientOptions& o = client_->options_;
  absl::Duration backoff = o.backoff_min;
  // The last time a member had the watch (or when it started).
  absl::Time served_at = absl::Now();
  absl::Status last = absl::UnavailableError("no endpoint tried");
  absl::optional<absl::Status> end;
  while (!end.has_value()) {
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) {
        end = absl::OkStatus();
        break;
      }
    }
    if (absl::Now() - served_at > kRetryTimeout) {
      end = absl::UnavailableError(absl::StrCat(
          "no member served the watch for ",
          absl::FormatDuration(kRetryTimeout), ": ", last.message()));
      break;
    }
    // The healthiest endpoint now: one whose stream just failed has moved to
    // the back of the order.
    const std::shared_ptr<Client::Endpoint> ep = client_->Ordered().front();
    const std::shared_ptr<grpc::Channel> channel = Client::ChannelOf(*ep);
    const std::string& address = Client::AddressOf(*ep);
    if (!channel->WaitForConnected(
            absl::ToChronoTime(absl::Now() + o.dial_timeout))) {
      client_->MarkFailed(*ep);
      client_->RequestSync();
      last =
          absl::UnavailableError(absl::StrCat("cannot connect to ", address));
      continue;
    }
    absl::Status why;
    bool created = false;
    end = RunStream(channel, address, &why, &created);
    if (end.has_value()) break;
    last = why;
    // A stream a member created resets the backoff and the give-up clock;
    // one that failed at once backs off so a bad member is not hammered.
    if (created) {
      served_at = absl::Now();
      backoff = o.backoff_min;
    }
    client_->MarkFailed(*ep);
    client_->RequestSync();
    if (!Sleep(client_->Jittered(backoff))) continue;  // cancelled
    backoff = std::min(backoff * 2, o.backoff_max);
  }
  absl::MutexLock lock(&mu_);
  end_ = *end;
  done_ = true;
  endpoint_.clear();
}

absl::optional<absl::Status> Watcher::RunStream(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
    absl::Status* why, bool* created) {
  auto stub = etcdserverpb::Watch::NewStub(channel);
  grpc::ClientContext ctx;
  // etcd's clients ask for require-leader this way; lockd requires a leader
  // anyway, etcd only when asked.
  ctx.AddMetadata("hasleader", "true");
  int64_t start;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return absl::OkStatus();
    stream_ctx_ = &ctx;
    endpoint_ = address;
    ++streams_;
    start = next_revision_;
  }
  // Whatever happens below, Cancel() must not touch `ctx` once it is gone.
  struct Detach {
    Watcher* w;
    ~Detach() {
      absl::MutexLock lock(&w->mu_);
      w->stream_ctx_ = nullptr;
      w->endpoint_.clear();
    }
  } detach{this};

  auto stream = stub->Watch(&ctx);
  etcdserverpb::WatchRequest wreq;
  *wreq.mutable_create_request() = req_;
  wreq.mutable_create_request()->set_start_revision(start);
  absl::optional<absl::Status> end;
  if (stream->Write(wreq)) {
    int64_t watch_id = -1;
    etcdserverpb::WatchResponse resp;
    while (!end.has_value() && stream->Read(&resp)) {
      if (resp.created() && watch_id == -1) {
        if (resp.canceled()) {
          // Refused at creation: the same request would be refused by any
          // member.
          end = resp.compact_revision() != 0
                    ? Compacted()
                    : absl::InvalidArgumentError(resp.cancel_reason());
          break;
        }
        watch_id = resp.watch_id();
        *created = true;
        absl::MutexLock lock(&mu_);
        // "From now" becomes a concrete revision once, so that every later
        // stream resumes exactly where this one began.
        if (next_revision_ == 0) {
          next_revision_ = resp.header().revision() + 1;
        }
        created_ = true;
        continue;
      }
      if (resp.watch_id() != watch_id) continue;  // progress for the stream
      if (resp.canceled()) {
        if (resp.compact_revision() != 0) {
          end = Compacted();
          break;
        }
        // The member ended the watch without a reason we must obey (e.g.
        // it is shutting down): resume elsewhere.
        *why = absl::UnavailableError(
            absl::StrCat("the member at ", address, " cancelled the watch: ",
                         resp.cancel_reason().empty() ? "no reason given"
                                                      : resp.cancel_reason()));
        ctx.TryCancel();
        break;
      }
      if (resp.events_size() == 0) continue;
      // Drop what was delivered already (a member resending from an older
      // revision); keep the rest, in order.
      int64_t next;
      {
        absl::MutexLock lock(&mu_);
        next = next_revision_;
      }
      int first = 0;
      while (first < resp.events_size() &&
             resp.events(first).kv().mod_revision() < next) {
        ++first;
      }
      if (first == resp.events_size()) continue;
      if (first > 0) {
        resp.mutable_events()->DeleteSubrange(0, first);
      }
      const int64_t last_revision =
          resp.events(resp.events_size() - 1).kv().mod_revision();
      const bool more = on_events_(resp);
      {
        absl::MutexLock lock(&mu_);
        next_revision_ = last_revision + 1;
      }
      if (!more) {
        end = absl::OkStatus();
        break;
      }
    }
  }
  if (end.has_value()) ctx.TryCancel();
  grpc::Status finished = stream->Finish();
  if (end.has_value()) return end;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return absl::OkStatus();
  }
  if (why->ok()) {
    *why = FromGrpc(finished);
    if (why->ok()) {
      *why = absl::UnavailableError(
          absl::StrCat("the member at ", address, " ended the watch stream"));
    }
  }
  return absl::nullopt;
}

}  // namespace lockd::client
