#include "lockd/server/forwarding.h"

#include <iterator>
#include <map>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "lockd/util/clock.h"

namespace lockd {
namespace {

// Proposals one stream holds unanswered before Send refuses more (the
// caller then takes its slow path).
constexpr size_t kMaxUnanswered = 16384;
// How long the leader keeps a forwarded proposal's result waiter: past any
// call's deadline (7 s), after which nobody waits for the result.
constexpr absl::Duration kResultWait = absl::Seconds(10);

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
  Stream(ProposalForwarder* owner, uint64_t self, uint64_t leader,
         const std::shared_ptr<grpc::Channel>& channel)
      : owner_(owner),
        self_(self),
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

  bool Send(uint64_t id, uint64_t term, std::string entry, absl::Time deadline,
            Refused refused, Applied applied) {
    absl::MutexLock lock(&mu_);
    if (unanswered_.size() >= kMaxUnanswered) Prune(MonotonicNow());
    if (closing_ || broken_ || unanswered_.size() >= kMaxUnanswered) {
      return false;
    }
    unanswered_[id] = Pending{std::move(refused), std::move(applied), deadline};
    internal::ForwardedProposals::Proposal* p = queued_.add_proposals();
    p->set_id(id);
    p->set_entry(std::move(entry));
    p->set_term(term);
    if (!writing_) Flush();
    return true;
  }

  // No new proposals; the leader ends the call once it has taken (or
  // refused) those sent.
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
    std::vector<Pending> refused, applied;
    std::vector<const internal::ProposalAcks::Ack*> refused_acks, applied_acks;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        broken_ = true;
        return;
      }
      for (const internal::ProposalAcks::Ack& ack : acks_.acks()) {
        auto it = unanswered_.find(ack.id());
        if (it == unanswered_.end()) continue;
        (ack.applied() ? applied : refused).push_back(std::move(it->second));
        (ack.applied() ? applied_acks : refused_acks).push_back(&ack);
        unanswered_.erase(it);
      }
      // Proposals whose answer never came (lost with a leader) are answered
      // by their waiters' deadlines; forget them now and then.
      if (++reads_ % 1024 == 0) Prune(MonotonicNow());
    }
    for (size_t i = 0; i < applied.size(); ++i) {
      applied[i].applied(*applied_acks[i]);
    }
    for (size_t i = 0; i < refused.size(); ++i) {
      refused[i].refused(
          grpc::Status(static_cast<grpc::StatusCode>(refused_acks[i]->code()),
                       refused_acks[i]->message()));
    }
    StartRead(&acks_);
  }

  void OnDone(const grpc::Status& status) override {
    // Proposals still queued were never sent: the caller may place them
    // again. Those sent and not answered may still commit; the follower's
    // own apply answers them.
    std::vector<Refused> unsent;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& p : queued_.proposals()) {
        auto it = unanswered_.find(p.id());
        if (it != unanswered_.end()) {
          unsent.push_back(std::move(it->second.refused));
        }
      }
    }
    for (Refused& done : unsent) done(LeaderChanged());
    owner_->StreamDone(this);
    delete this;
  }

 private:
  struct Pending {
    Refused refused;
    Applied applied;
    absl::Time deadline;
  };

  void Flush() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    out_.Clear();
    out_.Swap(&queued_);
    out_.set_origin_member(self_);
    writing_ = true;
    StartWrite(&out_);
  }

  void MaybeWritesDone() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closing_ && !writing_ && !writes_done_ && !broken_) {
      writes_done_ = true;
      StartWritesDone();
    }
  }

  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = unanswered_.begin(); it != unanswered_.end();) {
      it = it->second.deadline < now ? unanswered_.erase(it) : std::next(it);
    }
  }

  ProposalForwarder* const owner_;
  const uint64_t self_;
  const uint64_t leader_;
  std::unique_ptr<internal::Peer::Stub> stub_;
  grpc::ClientContext ctx_;
  internal::ProposalAcks acks_;  // read into by the one read in flight
  absl::Mutex mu_;
  internal::ForwardedProposals queued_ ABSL_GUARDED_BY(mu_);
  internal::ForwardedProposals out_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Pending> unanswered_ ABSL_GUARDED_BY(mu_);
  uint64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
};

ProposalForwarder::ProposalForwarder(uint64_t self, ChannelFor channel_for)
    : self_(self), channel_for_(std::move(channel_for)) {}

ProposalForwarder::~ProposalForwarder() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  current_ = nullptr;
  for (Stream* s : live_) s->Cancel();
  mu_.Await(absl::Condition(
      +[](std::set<Stream*>* live) { return live->empty(); }, &live_));
}

bool ProposalForwarder::Send(uint64_t leader, uint64_t term, uint64_t id,
                             std::string entry, absl::Time deadline,
                             Refused refused, Applied applied) {
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
    current_ = new Stream(this, self_, leader, channel);
    live_.insert(current_);
  }
  return current_->Send(id, term, std::move(entry), deadline,
                        std::move(refused), std::move(applied));
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
  ProposeReactor(raft::RaftNode* node, KvStateMachine* state_machine,
                 size_t max_entry_bytes)
      : node_(node),
        state_machine_(state_machine),
        max_entry_bytes_(max_entry_bytes),
        link_(std::make_shared<Link>()) {
    {
      absl::MutexLock lock(&link_->mu);
      link_->reactor = this;
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinish();
      return;
    }
    const uint64_t origin = in_.origin_member();
    {
      absl::MutexLock lock(&mu_);
      in_flight_ += in_.proposals_size();
    }
    const absl::Time result_deadline = MonotonicNow() + kResultWait;
    for (internal::ForwardedProposals::Proposal& p : *in_.mutable_proposals()) {
      const uint64_t id = p.id();
      if (p.entry().size() > max_entry_bytes_) {
        Proposed(
            origin, id,
            absl::InvalidArgumentError("etcdserver: request is too large"));
        continue;
      }
      // Registered first: the entry may apply as soon as it is proposed.
      std::shared_ptr<Link> link = link_;
      state_machine_->RegisterForwarded(
          origin, id,
          [link, id](ApplyResult result) {
            absl::MutexLock lock(&link->mu);
            if (link->reactor != nullptr) link->reactor->Result(id, result);
          },
          result_deadline);
      node_->ProposeAsync(
          std::move(*p.mutable_entry()),
          [this, origin, id](absl::Status s) { Proposed(origin, id, s); },
          p.term());
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

  void OnDone() override {
    {
      absl::MutexLock lock(&link_->mu);
      link_->reactor = nullptr;
    }
    delete this;
  }

 private:
  // How results reach the reactor while it lives (the state machine may
  // apply an entry after the call has ended).
  struct Link {
    absl::Mutex mu;
    ProposeReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  };

  // Called once per proposal with the node's answer: on the node's thread,
  // or the reader's when the node could not queue it. Never blocks.
  void Proposed(uint64_t origin, uint64_t id, const absl::Status& s) {
    if (!s.ok()) state_machine_->CancelForwarded(origin, id);
    absl::MutexLock lock(&mu_);
    if (!s.ok()) {
      internal::ProposalAcks::Ack* ack = pending_.add_acks();
      ack->set_id(id);
      ack->set_code(static_cast<int>(s.code()));
      ack->set_message(std::string(s.message()));
    }
    --in_flight_;
    Flush();
    MaybeFinish();
  }

  // The applied result of proposal `id`, on the apply thread.
  void Result(uint64_t id, const ApplyResult& result) {
    absl::MutexLock lock(&mu_);
    if (finished_ || write_failed_) return;
    internal::ProposalAcks::Ack* ack = pending_.add_acks();
    ack->set_id(id);
    ack->set_applied(true);
    if (!result.status.ok()) {
      ack->set_code(static_cast<int>(result.status.code()));
      ack->set_message(std::string(result.status.message()));
    } else if (result.put.has_header()) {
      *ack->mutable_put() = result.put;
    } else if (result.delete_range.has_header()) {
      *ack->mutable_delete_range() = result.delete_range;
    } else if (result.txn.has_header()) {
      *ack->mutable_txn() = result.txn;
    } else if (result.lease_grant.has_header()) {
      *ack->mutable_lease_grant() = result.lease_grant;
    } else if (result.lease_revoke.has_header()) {
      *ack->mutable_lease_revoke() = result.lease_revoke;
    } else if (result.compaction.has_header()) {
      *ack->mutable_compaction() = result.compaction;
    } else if (result.alarm.has_header()) {
      *ack->mutable_alarm() = result.alarm;
    }
    Flush();
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

  // Ends the call once the follower has closed its side and every proposal
  // has the node's answer. Results still to come are dropped: the
  // follower's own apply answers those.
  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || in_flight_ > 0 || writing_) return;
    if (pending_.acks_size() > 0 && !write_failed_) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  raft::RaftNode* const node_;
  KvStateMachine* const state_machine_;
  const size_t max_entry_bytes_;
  const std::shared_ptr<Link> link_;
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
ServeForwardedProposals(raft::RaftNode* node, KvStateMachine* state_machine,
                        size_t max_entry_bytes) {
  return new ProposeReactor(node, state_machine, max_entry_bytes);
}

}  // namespace lockd
