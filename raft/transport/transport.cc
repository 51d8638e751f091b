#include "raft/transport/transport.h"

#include <grpcpp/grpcpp.h>

#include <deque>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "lockd/util/log.h"
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

class Transport::Service final : public raftpb::RaftTransport::Service {
 public:
  Service(const TransportOptions& options, MessageHandler* handler)
      : options_(options), handler_(handler) {}

  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }

  grpc::Status Stream(grpc::ServerContext*,
                      grpc::ServerReader<raftpb::MessageBatch>* reader,
                      raftpb::StreamAck* ack) override {
    raftpb::MessageBatch batch;
    uint64_t received = 0;
    while (reader->Read(&batch)) {
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
      }
      received += messages.size();
      handler_->Deliver(std::move(messages));
    }
    ack->set_messages_received(received);
    return grpc::Status::OK;
  }

 private:
  const TransportOptions options_;
  MessageHandler* handler_;
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

 private:
  // Waits `d` or until stopped. Returns false when stopped.
  bool Pause(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), d);
    return !stop_;
  }

  absl::Duration NextBackoff() {
    // Full jitter in [backoff/2, backoff], then double up to the cap.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    absl::Duration d = backoff_ * jitter(rng_);
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    return d;
  }

  // Drops everything queued: it was meant for a connection that failed.
  void DropQueue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    stats_.dropped += queue_.size();
    queue_.clear();
    queue_bytes_ = 0;
  }

  void Run() {
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
          address_, grpc::InsecureChannelCredentials(), args);
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
          DropQueue();
        } else {
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
};

// ---------------------------------------------------------------------------

Transport::Transport(const TransportOptions& options, MessageHandler* handler)
    : options_(options),
      handler_(handler),
      service_(std::make_unique<Service>(options, handler)) {}

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
}

Transport::PeerStats Transport::Stats(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(id);
  return it == peers_.end() ? PeerStats() : it->second->stats();
}

}  // namespace lockd::raft
