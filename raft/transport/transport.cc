#include "raft/transport/transport.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"
#include "lockd/util/thread_name.h"
#include "raft/transport/convert.h"
#include "raftpb/raft.grpc.pb.h"

namespace lockd::raft {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

}  // namespace

// ---------------------------------------------------------------------------
// Receiving

class Transport::Service final
    : public raftpb::RaftTransport::WithCallbackMethod_Stream<
          raftpb::RaftTransport::Service> {
 public:
  Service(Transport* transport, const TransportOptions& options,
          MessageHandler* handler, SnapshotIo* snapshots)
      : transport_(transport),
        options_(options),
        handler_(handler),
        snapshots_(snapshots) {}

  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }

  // Raft messages arrive on the callback API: a batch is handed to the node
  // on the gRPC thread that read it from the socket, one thread hand-off
  // fewer per message than a blocking reader.
  grpc::ServerReadReactor<raftpb::MessageBatch>* Stream(
      grpc::CallbackServerContext*, raftpb::StreamAck* ack) override {
    return new StreamReader(this, ack);
  }

  grpc::Status SendSnapshot(grpc::ServerContext*,
                            grpc::ServerReader<raftpb::SnapshotChunk>* reader,
                            raftpb::SnapshotAck* ack) override {
    if (snapshots_ == nullptr) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                          "this member cannot receive snapshots");
    }
    // Each receive holds an image on disk: bound them.
    if (receives_.fetch_add(1) >= options_.snapshot_receives_max) {
      receives_.fetch_sub(1);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "too many snapshots being received");
    }
    uint64_t bytes = 0;
    grpc::Status status = ReceiveSnapshot(reader, &bytes);
    receives_.fetch_sub(1);
    transport_->CountReceive(status.ok(), bytes);
    if (!status.ok()) {
      Logf(LogLevel::kWarning, "transport",
           "receiving a snapshot failed after %d bytes: %s", bytes,
           status.error_message());
      return status;
    }
    ack->set_bytes_received(bytes);
    return grpc::Status::OK;
  }

 private:
  class StreamReader final
      : public grpc::ServerReadReactor<raftpb::MessageBatch> {
   public:
    StreamReader(Service* service, raftpb::StreamAck* ack)
        : service_(service), ack_(ack) {
      StartRead(&batch_);
    }
    void OnReadDone(bool ok) override {
      if (!ok) {  // the sender finished (or the stream broke)
        ack_->set_messages_received(received_);
        Finish(grpc::Status::OK);
        return;
      }
      if (batch_.from() != from_) {
        from_ = batch_.from();
        received_bytes_ = service_->transport_->ReceivedBytes(from_);
      }
      if (received_bytes_ != nullptr) {
        received_bytes_->Add(batch_.ByteSizeLong());
      }
      grpc::Status st = service_->HandleBatch(batch_, &received_);
      if (!st.ok()) {
        Finish(st);
        return;
      }
      StartRead(&batch_);
    }
    void OnDone() override { delete this; }

   private:
    Service* const service_;
    raftpb::StreamAck* const ack_;
    raftpb::MessageBatch batch_;
    uint64_t received_ = 0;
    uint64_t from_ = 0;
    metrics::Counter* received_bytes_ = nullptr;
  };

  // Checks one batch and delivers its messages; an error ends the stream.
  grpc::Status HandleBatch(const raftpb::MessageBatch& batch,
                           uint64_t* received) {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "member is shutting down");
      }
    }
    if (batch.cluster_id() != options_.cluster_id) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrFormat("cluster ID mismatch: member %x is in cluster %x, "
                          "the sender %x in cluster %x; check "
                          "--initial-cluster-token and --initial-cluster",
                          options_.self_id, options_.cluster_id, batch.from(),
                          batch.cluster_id()));
    }
    if (batch.to() != options_.self_id) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrFormat("messages for member %x reached member %x: the "
                          "sender's peer URLs are out of date",
                          batch.to(), options_.self_id));
    }
    if (absl::Status s = handler_->CheckPeer(batch.from()); !s.ok()) {
      return ToGrpc(s);
    }
    std::vector<Message> messages(batch.messages_size());
    for (int i = 0; i < batch.messages_size(); ++i) {
      if (absl::Status s = FromProto(batch.messages(i), &messages[i]);
          !s.ok()) {
        return ToGrpc(s);
      }
      if (messages[i].from != batch.from() ||
          messages[i].to != options_.self_id) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "message addressing does not match its batch");
      }
      if (messages[i].type == MessageType::kSnap) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "snapshots travel over SendSnapshot only");
      }
    }
    *received += messages.size();
    handler_->Deliver(std::move(messages));
    return grpc::Status::OK;
  }

  grpc::Status ReceiveSnapshot(
      grpc::ServerReader<raftpb::SnapshotChunk>* reader, uint64_t* bytes) {
    raftpb::SnapshotChunk chunk;
    if (!reader->Read(&chunk)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "empty snapshot stream");
    }
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "member is shutting down");
      }
    }
    if (chunk.cluster_id() != options_.cluster_id ||
        chunk.to() != options_.self_id) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrFormat("snapshot for member %x of cluster "
                          "%x reached member %x of cluster %x",
                          chunk.to(), chunk.cluster_id(), options_.self_id,
                          options_.cluster_id));
    }
    if (absl::Status s = handler_->CheckPeer(chunk.from()); !s.ok()) {
      return ToGrpc(s);
    }
    Message m;
    if (!chunk.has_message()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first snapshot chunk carries no message");
    }
    if (absl::Status s = FromProto(chunk.message(), &m); !s.ok()) {
      return ToGrpc(s);
    }
    if (m.type != MessageType::kSnap || m.from != chunk.from() ||
        m.to != options_.self_id) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first snapshot chunk must carry the MsgSnap "
                          "message of its sender to this member");
    }
    absl::StatusOr<std::unique_ptr<SnapshotSink>> sink =
        snapshots_->OpenSink(m);
    if (!sink.ok()) return ToGrpc(sink.status());
    while (true) {
      if (chunk.offset() != *bytes) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrFormat("snapshot chunk at offset %d, "
                                            "expected %d",
                                            chunk.offset(), *bytes));
      }
      *bytes += chunk.data().size();
      if (*bytes > options_.snapshot_bytes_max) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "snapshot is larger than this member accepts");
      }
      if (absl::Status s = (*sink)->Write(chunk.data()); !s.ok()) {
        return ToGrpc(s);
      }
      if (chunk.last()) break;
      if (!reader->Read(&chunk)) {
        return grpc::Status(grpc::StatusCode::ABORTED,
                            "snapshot stream ended before its last chunk");
      }
    }
    absl::StatusOr<std::string> descriptor = (*sink)->Finish();
    if (!descriptor.ok()) return ToGrpc(descriptor.status());
    Logf(LogLevel::kInfo, "transport",
         "received a snapshot from %x at index %d (term %d): %d bytes", m.from,
         m.snapshot.metadata.index, m.snapshot.metadata.term, *bytes);
    m.snapshot.data = *std::move(descriptor);
    std::vector<Message> one;
    one.push_back(std::move(m));
    handler_->Deliver(std::move(one));
    return grpc::Status::OK;
  }

  Transport* transport_;
  const TransportOptions options_;
  MessageHandler* handler_;
  SnapshotIo* snapshots_;
  std::atomic<int> receives_{0};
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// ---------------------------------------------------------------------------
// Sending

class Transport::Peer {
 public:
  Peer(Transport* transport, uint64_t id, std::string address)
      : transport_(transport),
        options_(transport->options_),
        id_(id),
        address_(std::move(address)),
        rng_(options_.seed * 0x9e3779b97f4a7c15ULL ^ id) {
    if (options_.metrics != nullptr) {
      const metrics::Labels to = {{"To", absl::StrFormat("%x", id)}};
      sent_bytes_ = options_.metrics->GetCounter(
          "etcd_network_peer_sent_bytes_total",
          "The total number of bytes sent to peers.", to);
      sent_failures_ = options_.metrics->GetCounter(
          "etcd_network_peer_sent_failures_total",
          "The total number of send failures from peers.", to);
    }
    thread_ = std::thread([this] { Run(); });
  }

  ~Peer() { Stop(); }

  // False when the queue is full (the message is dropped).
  bool Enqueue(Message m) {
    absl::MutexLock lock(&mu_);
    uint64_t bytes = 0;
    for (const Entry& e : m.entries) bytes += e.PayloadSize();
    bytes += m.snapshot.data.size();
    if (queue_.size() >= options_.queue_messages_max ||
        queue_bytes_ + bytes > options_.queue_bytes_max) {
      ++stats_.dropped;
      CountFailures(1);
      if (m.type == MessageType::kHeartbeat &&
          transport_->heartbeat_send_failures_ != nullptr) {
        transport_->heartbeat_send_failures_->Inc();
      }
      return false;
    }
    queue_bytes_ += bytes;
    queue_.push_back(std::move(m));
    return true;
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      stop_ = true;
      if (ctx_ != nullptr) ctx_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }

  PeerStats stats() const {
    absl::MutexLock lock(&mu_);
    return stats_;
  }

  const std::string& address() const { return address_; }

 private:
  // Waits `d` or until stopped. Returns false when stopped.
  bool Pause(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    AwaitFor(mu_, absl::Condition(&stop_), d);
    return !stop_;
  }

  absl::Duration NextBackoff() {
    // Full jitter in [backoff/2, backoff], then double up to the cap.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    absl::Duration d = backoff_ * jitter(rng_);
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    return d;
  }

  void CountFailures(uint64_t messages) {
    if (sent_failures_ != nullptr && messages > 0) {
      sent_failures_->Add(messages);
    }
  }

  // Drops everything queued: it was meant for a connection that failed.
  void DropQueue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    CountFailures(queue_.size());
    stats_.dropped += queue_.size();
    queue_.clear();
    queue_bytes_ = 0;
  }

  void Run() {
    SetThreadName("raft-send");
    backoff_ = options_.backoff_min;
    bool logged_down = false;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
      }
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
      args.SetInt(
          GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
          static_cast<int>(absl::ToInt64Milliseconds(options_.backoff_max)));
      args.SetMaxSendMessageSize(INT32_MAX);
      auto channel = grpc::CreateCustomChannel(
          address_, options_.channel_credentials, args);
      auto deadline = std::chrono::system_clock::now() +
                      absl::ToChronoMilliseconds(options_.dial_timeout);
      if (!channel->WaitForConnected(deadline)) {
        {
          absl::MutexLock lock(&mu_);
          DropQueue();
        }
        transport_->MarkUnreachable(id_);
        if (!logged_down) {
          Logf(LogLevel::kWarning, "transport",
               "cannot reach peer %x at %s; retrying with backoff", id_,
               address_);
          logged_down = true;
        }
        if (!Pause(NextBackoff())) return;
        continue;
      }

      auto stub = raftpb::RaftTransport::NewStub(channel);
      grpc::ClientContext ctx;
      raftpb::StreamAck ack;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        ctx_ = &ctx;
      }
      std::unique_ptr<grpc::ClientWriter<raftpb::MessageBatch>> writer =
          stub->Stream(&ctx, &ack);
      {
        absl::MutexLock lock(&mu_);
        ++stats_.connects;
        stats_.connected = true;
      }
      if (logged_down) {
        Logf(LogLevel::kInfo, "transport", "peer %x at %s is reachable again",
             id_, address_);
        logged_down = false;
      }
      backoff_ = options_.backoff_min;

      bool broken = false;
      while (!broken) {
        raftpb::MessageBatch batch;
        size_t count = 0;
        {
          absl::MutexLock lock(&mu_);
          auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stop_ || !queue_.empty();
          };
          mu_.Await(absl::Condition(&ready));
          if (stop_) break;
          batch.set_cluster_id(options_.cluster_id);
          batch.set_from(options_.self_id);
          batch.set_to(id_);
          uint64_t bytes = 0;
          while (!queue_.empty() &&
                 (count == 0 || bytes < options_.batch_bytes_max)) {
            Message& m = queue_.front();
            uint64_t mb = m.snapshot.data.size();
            for (const Entry& e : m.entries) mb += e.PayloadSize();
            bytes += mb;
            queue_bytes_ -= mb;
            ToProto(m, batch.add_messages());
            queue_.pop_front();
            ++count;
          }
        }
        if (!writer->Write(batch)) {
          broken = true;
          absl::MutexLock lock(&mu_);
          stats_.dropped += count;
          CountFailures(count);
          DropQueue();
        } else {
          // Write serialized it: its size is cached.
          if (sent_bytes_ != nullptr) sent_bytes_->Add(batch.GetCachedSize());
          absl::MutexLock lock(&mu_);
          stats_.sent += count;
        }
      }
      writer->WritesDone();
      grpc::Status status = writer->Finish();
      bool stopping;
      {
        absl::MutexLock lock(&mu_);
        ctx_ = nullptr;
        stats_.connected = false;
        stopping = stop_;
      }
      if (stopping) return;
      transport_->MarkUnreachable(id_);
      if (!status.ok()) {
        Logf(LogLevel::kWarning, "transport", "stream to peer %x ended: %s",
             id_, status.error_message());
        logged_down = true;
        // A refusal (wrong cluster, removed) will not fix itself quickly.
        if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
            status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
          backoff_ = options_.backoff_max;
        }
      }
      if (!Pause(NextBackoff())) return;
    }
  }

  Transport* transport_;
  const TransportOptions options_;
  const uint64_t id_;
  const std::string address_;
  std::mt19937_64 rng_;     // sender thread only
  absl::Duration backoff_;  // sender thread only
  std::thread thread_;

  mutable absl::Mutex mu_;
  std::deque<Message> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t queue_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  PeerStats stats_ ABSL_GUARDED_BY(mu_);
  metrics::Counter* sent_bytes_ = nullptr;     // set once
  metrics::Counter* sent_failures_ = nullptr;  // set once
};

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Sending snapshots

struct Transport::SnapshotSend {
  Message message;
  std::string address;
  std::thread thread;
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  grpc::ClientContext* ctx ABSL_GUARDED_BY(mu) = nullptr;

  void Cancel() {
    absl::MutexLock lock(&mu);
    cancelled = true;
    if (ctx != nullptr) ctx->TryCancel();
  }
  bool finished() {
    absl::MutexLock lock(&mu);
    return done;
  }
};

void Transport::StartSnapshotSend(Message m) {
  const uint64_t to = m.to;
  auto peer = peers_.find(to);
  int active = 0;
  for (const auto& [id, send] : snapshot_sends_) active += !send->finished();
  auto busy = snapshot_sends_.find(to);
  const char* refusal = nullptr;
  if (snapshots_ == nullptr) {
    refusal = "this member cannot send snapshots";
  } else if (peer == peers_.end()) {
    refusal = "unknown peer";
  } else if (busy != snapshot_sends_.end() && !busy->second->finished()) {
    refusal = "a snapshot to it is already in flight";
  } else if (active >= options_.snapshot_sends_max) {
    refusal = "too many snapshots in flight";
  }
  if (refusal != nullptr) {
    // The core retries after the next heartbeat response.
    snapshot_reports_.emplace_back(to, false);
    ++snapshot_stats_.send_failures;
    if (LogEnabled(LogLevel::kDebug)) {
      Logf(LogLevel::kDebug, "transport", "snapshot to %x not sent: %s", to,
           refusal);
    }
    return;
  }
  std::unique_ptr<SnapshotSend> old;
  if (busy != snapshot_sends_.end()) old = std::move(busy->second);
  auto send = std::make_unique<SnapshotSend>();
  send->message = std::move(m);
  send->address = peer->second->address();
  SnapshotSend* raw = send.get();
  snapshot_sends_[to] = std::move(send);
  raw->thread = std::thread([this, raw] { RunSnapshotSend(raw); });
  // A finished sender's thread is past its last use of mu_; join it here.
  if (old != nullptr && old->thread.joinable()) old->thread.join();
}

void Transport::RunSnapshotSend(SnapshotSend* send) {
  SetThreadName("raft-snap-send");
  const Message& m = send->message;
  uint64_t sent_bytes = 0;
  absl::Status result = [&]() -> absl::Status {
    absl::StatusOr<std::unique_ptr<SnapshotSource>> source =
        snapshots_->OpenSource(m);
    if (!source.ok()) return source.status();
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(INT32_MAX);
    // Its own connection, so the image never queues behind (or ahead of)
    // heartbeats on the message stream.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto channel = grpc::CreateCustomChannel(
        send->address, options_.channel_credentials, args);
    auto stub = raftpb::RaftTransport::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     absl::ToChronoMilliseconds(options_.snapshot_timeout));
    {
      absl::MutexLock lock(&send->mu);
      if (send->cancelled) return absl::CancelledError("transport stopped");
      send->ctx = &ctx;
    }
    raftpb::SnapshotAck ack;
    std::unique_ptr<grpc::ClientWriter<raftpb::SnapshotChunk>> writer =
        stub->SendSnapshot(&ctx, &ack);
    bool first = true, more = true, broken = false;
    while (more) {
      raftpb::SnapshotChunk chunk;
      if (first) {
        chunk.set_cluster_id(options_.cluster_id);
        chunk.set_from(options_.self_id);
        chunk.set_to(m.to);
        ToProto(m, chunk.mutable_message());
        first = false;
      }
      chunk.set_offset(sent_bytes);
      absl::StatusOr<bool> next =
          (*source)->Next(options_.snapshot_chunk_bytes, chunk.mutable_data());
      if (!next.ok()) {
        absl::MutexLock lock(&send->mu);
        ctx.TryCancel();
        send->ctx = nullptr;
        return next.status();
      }
      more = *next;
      chunk.set_last(!more);
      sent_bytes += chunk.data().size();
      // Blocks while the receiver's flow-control window is full.
      if (!writer->Write(chunk)) {
        broken = true;
        break;
      }
    }
    if (!broken) writer->WritesDone();
    grpc::Status status = writer->Finish();
    {
      absl::MutexLock lock(&send->mu);
      send->ctx = nullptr;
    }
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    if (ack.bytes_received() != sent_bytes) {
      return absl::DataLossError(
          absl::StrFormat("the receiver acknowledged %d of %d bytes",
                          ack.bytes_received(), sent_bytes));
    }
    return absl::OkStatus();
  }();
  if (result.ok()) {
    Logf(LogLevel::kInfo, "transport",
         "sent a snapshot at index %d (term %d) to %x: %d bytes",
         m.snapshot.metadata.index, m.snapshot.metadata.term, m.to, sent_bytes);
  } else {
    Logf(LogLevel::kWarning, "transport",
         "sending a snapshot at index %d to %x failed: %s",
         m.snapshot.metadata.index, m.to, std::string(result.message()));
  }
  {
    absl::MutexLock lock(&mu_);
    snapshot_reports_.emplace_back(m.to, result.ok());
    if (result.ok()) {
      ++snapshot_stats_.sent;
      snapshot_stats_.bytes_sent += sent_bytes;
    } else {
      ++snapshot_stats_.send_failures;
    }
  }
  absl::MutexLock lock(&send->mu);
  send->done = true;
}

void Transport::ReapSnapshotSends() {
  std::vector<std::unique_ptr<SnapshotSend>> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = snapshot_sends_.begin(); it != snapshot_sends_.end();) {
      if (it->second->finished()) {
        finished.push_back(std::move(it->second));
        it = snapshot_sends_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& send : finished) {
    if (send->thread.joinable()) send->thread.join();
  }
}

metrics::Counter* Transport::ReceivedBytes(uint64_t from) {
  if (options_.metrics == nullptr) return nullptr;
  return options_.metrics->GetCounter(
      "etcd_network_peer_received_bytes_total",
      "The total number of bytes received from peers.",
      {{"From", absl::StrFormat("%x", from)}});
}

void Transport::CountReceive(bool ok, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (ok) {
    ++snapshot_stats_.received;
    snapshot_stats_.bytes_received += bytes;
  } else {
    ++snapshot_stats_.receive_failures;
  }
}

std::vector<std::pair<uint64_t, bool>> Transport::TakeSnapshotReports() {
  ReapSnapshotSends();
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<uint64_t, bool>> out;
  out.swap(snapshot_reports_);
  return out;
}

Transport::SnapshotStats Transport::snapshot_stats() const {
  absl::MutexLock lock(&mu_);
  return snapshot_stats_;
}

// ---------------------------------------------------------------------------

Transport::Transport(const TransportOptions& options, MessageHandler* handler,
                     SnapshotIo* snapshots)
    : options_(options),
      handler_(handler),
      service_(std::make_unique<Service>(this, options, handler, snapshots)),
      snapshots_(snapshots) {
  if (options_.channel_credentials == nullptr) {
    options_.channel_credentials = grpc::InsecureChannelCredentials();
  }
  if (options_.metrics != nullptr) {
    heartbeat_send_failures_ = options_.metrics->GetCounter(
        "etcd_server_heartbeat_send_failures_total",
        "The total number of leader heartbeat send failures (likely "
        "overloaded from slow disk).");
  }
}

Transport::~Transport() { Stop(); }

grpc::Service* Transport::service() { return service_.get(); }

void Transport::AddPeer(uint64_t id, const std::string& address) {
  std::unique_ptr<Peer> old;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || id == options_.self_id) return;
    auto it = peers_.find(id);
    if (it != peers_.end()) old = std::move(it->second);
    peers_[id] = std::make_unique<Peer>(this, id, address);
  }
  // Joined outside the lock: its thread may be calling MarkUnreachable.
  old.reset();
}

void Transport::RemovePeer(uint64_t id) {
  std::unique_ptr<Peer> old;
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(id);
    if (it == peers_.end()) return;
    old = std::move(it->second);
    peers_.erase(it);
  }
  old.reset();
}

void Transport::Send(std::vector<Message> messages) {
  absl::MutexLock lock(&mu_);
  for (Message& m : messages) {
    if (m.type == MessageType::kSnap) {
      if (!stopped_) StartSnapshotSend(std::move(m));
      continue;
    }
    auto it = peers_.find(m.to);
    if (it == peers_.end()) {
      unreachable_.insert(m.to);
      continue;
    }
    if (!it->second->Enqueue(std::move(m))) unreachable_.insert(it->first);
  }
}

std::vector<uint64_t> Transport::TakeUnreachable() {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> out(unreachable_.begin(), unreachable_.end());
  unreachable_.clear();
  return out;
}

void Transport::MarkUnreachable(uint64_t id) {
  absl::MutexLock lock(&mu_);
  unreachable_.insert(id);
}

void Transport::Stop() {
  std::map<uint64_t, std::unique_ptr<Peer>> peers;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    peers.swap(peers_);
  }
  service_->Stop();
  peers.clear();  // joins the sender threads, outside the lock
  std::map<uint64_t, std::unique_ptr<SnapshotSend>> sends;
  {
    absl::MutexLock lock(&mu_);
    sends.swap(snapshot_sends_);
  }
  for (auto& [id, send] : sends) send->Cancel();
  for (auto& [id, send] : sends) {
    if (send->thread.joinable()) send->thread.join();
  }
}

Transport::PeerStats Transport::Stats(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(id);
  return it == peers_.end() ? PeerStats() : it->second->stats();
}

}  // namespace lockd::raft
