#include "lockd/server/forwarding.h"

#include <map>
#include <utility>
#include <vector>

namespace lockd {
namespace {

// Proposals one stream holds unacked before Send refuses more (the caller
// then takes its slow path).
constexpr size_t kMaxUnacked = 16384;

grpc::Status LeaderChanged() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "etcdserver: leader changed");
}

}  // namespace

// One Peer.Propose call to one leader. Proposals queue while a message is
// being written and go out together in the next one. Deletes itself when the
// call ends.
class ProposalForwarder::Stream final
    : public grpc::ClientBidiReactor<internal::ForwardedProposals,
                                     internal::ProposalAcks> {
 public:
  Stream(ProposalForwarder* owner, uint64_t leader,
         const std::shared_ptr<grpc::Channel>& channel)
      : owner_(owner),
        leader_(leader),
        stub_(internal::Peer::NewStub(channel)) {
    stub_->async()->Propose(&ctx_, this);
    StartRead(&acks_);
    StartCall();
  }

  uint64_t leader() const { return leader_; }

  bool Usable() {
    absl::MutexLock lock(&mu_);
    return !closing_ && !broken_;
  }

  bool Send(uint64_t id, std::string entry, Refused refused) {
    absl::MutexLock lock(&mu_);
    if (closing_ || broken_ || unacked_.size() >= kMaxUnacked) return false;
    unacked_[id] = std::move(refused);
    internal::ForwardedProposals::Proposal* p = queued_.add_proposals();
    p->set_id(id);
    p->set_entry(std::move(entry));
    if (!writing_) Flush();
    return true;
  }

  // No new proposals; the call ends once the leader acked those sent.
  void Close() {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    MaybeWritesDone();
  }

  void Cancel() { ctx_.TryCancel(); }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      broken_ = true;
      return;
    }
    if (queued_.proposals_size() > 0) {
      Flush();
      return;
    }
    MaybeWritesDone();
  }

  void OnReadDone(bool ok) override {
    std::vector<std::pair<Refused, grpc::Status>> refused;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        broken_ = true;
        return;
      }
      for (const internal::ProposalAcks::Ack& ack : acks_.acks()) {
        auto it = unacked_.find(ack.id());
        if (it == unacked_.end()) continue;
        if (ack.code() != 0) {
          refused.emplace_back(
              std::move(it->second),
              grpc::Status(static_cast<grpc::StatusCode>(ack.code()),
                           ack.message()));
        }
        unacked_.erase(it);
      }
    }
    for (auto& [done, status] : refused) done(status);
    StartRead(&acks_);
  }

  void OnDone(const grpc::Status& status) override {
    // Proposals still queued were never sent: the caller may place them
    // again. Those sent and not acked may still commit; their waiters
    // answer either way.
    std::vector<Refused> unsent;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& p : queued_.proposals()) {
        auto it = unacked_.find(p.id());
        if (it != unacked_.end()) unsent.push_back(std::move(it->second));
      }
    }
    for (Refused& done : unsent) done(LeaderChanged());
    owner_->StreamDone(this);
    delete this;
  }

 private:
  void Flush() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    out_.Clear();
    out_.Swap(&queued_);
    writing_ = true;
    StartWrite(&out_);
  }

  void MaybeWritesDone() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closing_ && !writing_ && !writes_done_ && !broken_) {
      writes_done_ = true;
      StartWritesDone();
    }
  }

  ProposalForwarder* const owner_;
  const uint64_t leader_;
  std::unique_ptr<internal::Peer::Stub> stub_;
  grpc::ClientContext ctx_;
  internal::ProposalAcks acks_;  // read into by the one read in flight
  absl::Mutex mu_;
  internal::ForwardedProposals queued_ ABSL_GUARDED_BY(mu_);
  internal::ForwardedProposals out_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Refused> unacked_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
};

ProposalForwarder::ProposalForwarder(ChannelFor channel_for)
    : channel_for_(std::move(channel_for)) {}

ProposalForwarder::~ProposalForwarder() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  current_ = nullptr;
  for (Stream* s : live_) s->Cancel();
  mu_.Await(absl::Condition(
      +[](std::set<Stream*>* live) { return live->empty(); }, &live_));
}

bool ProposalForwarder::Send(uint64_t leader, uint64_t id, std::string entry,
                             Refused refused) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  if (current_ != nullptr &&
      (current_->leader() != leader || !current_->Usable())) {
    current_->Close();
    current_ = nullptr;
  }
  if (current_ == nullptr) {
    std::shared_ptr<grpc::Channel> channel = channel_for_(leader);
    if (channel == nullptr) return false;
    current_ = new Stream(this, leader, channel);
    live_.insert(current_);
  }
  return current_->Send(id, std::move(entry), std::move(refused));
}

void ProposalForwarder::StreamDone(Stream* stream) {
  absl::MutexLock lock(&mu_);
  if (current_ == stream) current_ = nullptr;
  live_.erase(stream);
}

namespace {

// The leader's side of one Peer.Propose call. Deletes itself when done.
class ProposeReactor final
    : public grpc::ServerBidiReactor<internal::ForwardedProposals,
                                     internal::ProposalAcks> {
 public:
  ProposeReactor(raft::RaftNode* node, size_t max_entry_bytes)
      : node_(node), max_entry_bytes_(max_entry_bytes) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinish();
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      in_flight_ += in_.proposals_size();
    }
    for (internal::ForwardedProposals::Proposal& p : *in_.mutable_proposals()) {
      const uint64_t id = p.id();
      if (p.entry().size() > max_entry_bytes_) {
        Ack(id, absl::InvalidArgumentError("etcdserver: request is too large"));
        continue;
      }
      node_->ProposeAsync(std::move(*p.mutable_entry()),
                          [this, id](absl::Status s) { Ack(id, s); });
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) write_failed_ = true;
    Flush();
    MaybeFinish();
  }

  void OnDone() override { delete this; }

 private:
  // Called once per proposal; on the node's thread, or the reader's when
  // the node could not queue it. Never blocks.
  void Ack(uint64_t id, const absl::Status& s) {
    absl::MutexLock lock(&mu_);
    internal::ProposalAcks::Ack* ack = pending_.add_acks();
    ack->set_id(id);
    if (!s.ok()) {
      ack->set_code(static_cast<int>(s.code()));
      ack->set_message(std::string(s.message()));
    }
    --in_flight_;
    Flush();
    MaybeFinish();
  }

  void Flush() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || write_failed_ || finished_ || pending_.acks_size() == 0) {
      return;
    }
    out_.Clear();
    out_.Swap(&pending_);
    writing_ = true;
    StartWrite(&out_);
  }

  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || in_flight_ > 0 || writing_) return;
    if (pending_.acks_size() > 0 && !write_failed_) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  raft::RaftNode* const node_;
  const size_t max_entry_bytes_;
  internal::ForwardedProposals in_;  // read into by the one read in flight
  absl::Mutex mu_;
  internal::ProposalAcks pending_ ABSL_GUARDED_BY(mu_);
  internal::ProposalAcks out_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<internal::ForwardedProposals, internal::ProposalAcks>*
ServeForwardedProposals(raft::RaftNode* node, size_t max_entry_bytes) {
  return new ProposeReactor(node, max_entry_bytes);
}

}  // namespace lockd
