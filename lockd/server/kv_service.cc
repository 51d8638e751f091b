#include "lockd/server/kv_service.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>
#include <random>
#include <thread>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kv/mvcc/errors.h"
#include "kv/mvcc/validate.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"

namespace lockd {
namespace {

constexpr char kForwardedKey[] = "lockd-forwarded";
// See RelayWhileLeading.
constexpr absl::Duration kRelayProbeWait = absl::Seconds(1);
constexpr absl::Duration kRelayProbeEvery = absl::Seconds(1);

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

bool Forwarded(grpc::ServerContextBase* ctx) {
  return ctx->client_metadata().count(kForwardedKey) > 0;
}

// Raft's refusal as etcd clients know it, so they retry elsewhere.
grpc::Status NotLeader(uint64_t leader) {
  if (leader == 0) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader");
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "etcdserver: leader changed");
}

// The response in a leader's answer to a forwarded write.
void FromAck(const internal::ProposalAcks::Ack& ack,
             etcdserverpb::PutResponse* resp) {
  *resp = ack.put();
}
void FromAck(const internal::ProposalAcks::Ack& ack,
             etcdserverpb::DeleteRangeResponse* resp) {
  *resp = ack.delete_range();
}
void FromAck(const internal::ProposalAcks::Ack& ack,
             etcdserverpb::TxnResponse* resp) {
  *resp = ack.txn();
}
void FromAck(const internal::ProposalAcks::Ack& ack,
             etcdserverpb::LeaseGrantResponse* resp) {
  *resp = ack.lease_grant();
}
void FromAck(const internal::ProposalAcks::Ack& ack,
             etcdserverpb::LeaseRevokeResponse* resp) {
  *resp = ack.lease_revoke();
}
void FromAck(const internal::ProposalAcks::Ack& ack,
             etcdserverpb::CompactionResponse* resp) {
  *resp = ack.compaction();
}
void FromAck(const internal::ProposalAcks::Ack& ack,
             etcdserverpb::AlarmResponse* resp) {
  *resp = ack.alarm();
}

// Lease commands: a follower answers them once it has applied them itself
// (KvStateMachine::Rearm), since they need not change the revision. That
// can be before the leader has applied a grant; the leader's keep-alive and
// TimeToLive take a read barrier before they answer "not found".
template <typename Resp>
constexpr bool kLeaseCommand =
    std::is_same_v<Resp, etcdserverpb::LeaseGrantResponse> ||
    std::is_same_v<Resp, etcdserverpb::LeaseRevokeResponse>;

// How long a follower holds the answer to a write the leader applied for
// it, waiting to apply it too; past this (a member removed before it could,
// or far behind) it answers anyway.
constexpr absl::Duration kOwnApplyWait = absl::Seconds(1);

// A forwarded write that never applies: the leader refused it before
// proposing it, or it was lost with its term (KvStateMachine::Register).
// Trying the new leader cannot apply it twice.
bool RefusedBeforeProposing(const grpc::Status& st) {
  return st.error_code() == grpc::StatusCode::UNAVAILABLE &&
         (st.error_message() == "etcdserver: leader changed" ||
          st.error_message() == "etcdserver: no leader");
}

}  // namespace

absl::Time RequestDeadline(grpc::ServerContextBase* ctx) {
  // No client deadline (system_clock's max) is absl::InfiniteFuture().
  return std::min(MonotonicNow() + kRequestTimeout,
                  FromGrpcDeadline(ctx->deadline()));
}

KvService::KvService(const ServerConfig* config, raft::RaftNode* node,
                     kv::MvccStore* store, KvStateMachine* state_machine,
                     absl::Mutex* compaction_mu, const Membership* membership,
                     std::shared_ptr<grpc::ChannelCredentials> peer_credentials)
    : config_(config),
      node_(node),
      store_(store),
      state_machine_(state_machine),
      compaction_mu_(compaction_mu),
      membership_(membership),
      // Ids only need to be unique among this member's waiting requests;
      // a random start keeps a restarted member from reusing live ones.
      next_id_(std::random_device{}() |
               (uint64_t{std::random_device{}()} << 32)),
      forwarder_(std::make_unique<ProposalForwarder>(
          config->member_id,
          [this](uint64_t leader) { return PeerChannel(leader); })),
      peer_credentials_(std::move(peer_credentials)) {
  constexpr absl::Duration kSweepEvery = absl::Milliseconds(50);
  sweeper_.Start("kv-sweeper", MonotonicNow() + kSweepEvery, [this] {
    // A removed member applies nothing more: writes it holds for its own
    // apply are answered now.
    if (node_->removed()) state_machine_->ReleaseRevisionWaits();
    state_machine_->ExpireWaiters(MonotonicNow());
    ExpireReads(MonotonicNow());
    return MonotonicNow() + kSweepEvery;
  });
}

KvService::~KvService() {
  // Its refusals still use the worker pool.
  forwarder_.reset();
  sweeper_.Stop();
  // Whatever still waits for a commit is answered now.
  state_machine_->ExpireWaiters(absl::InfiniteFuture());
  ExpireReads(absl::InfiniteFuture());
}

void KvService::FillHeader(etcdserverpb::ResponseHeader* h) const {
  h->set_cluster_id(config_->cluster_id);
  h->set_member_id(config_->member_id);
  h->set_raft_term(node_->term());
  if (h->revision() == 0) h->set_revision(store_->revision());
}

std::shared_ptr<grpc::Channel> KvService::PeerChannel(uint64_t member) {
  std::string address;
  if (std::optional<etcdserverpb::Member> m = membership_->Find(member);
      m.has_value() && m->peerurls_size() > 0) {
    absl::StatusOr<Url> url = ParseUrl(m->peerurls(0));
    if (url.ok()) address = url->HostPort();
  }
  if (address.empty()) {
    // Before this member has applied the member table (e.g. while a joining
    // member replays the log), the static configuration knows the bootstrap
    // members.
    for (const MemberConfig& m : config_->members) {
      if (m.id == member && !m.peer_urls.empty()) {
        address = m.peer_urls[0].HostPort();
      }
    }
  }
  if (address.empty()) return nullptr;
  absl::MutexLock lock(&channels_mu_);
  std::shared_ptr<grpc::Channel>& channel = channels_[address];
  if (channel == nullptr) {
    channel = grpc::CreateChannel(address, peer_credentials_);
  }
  return channel;
}

void KvService::Offload(grpc::ServerUnaryReactor* reactor,
                        std::function<grpc::Status()> blocking) {
  if (!pool_.Submit([reactor, blocking = std::move(blocking)] {
        reactor->Finish(blocking());
      })) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "etcdserver: too many requests"));
  }
}

template <typename Req, typename Resp>
grpc::ServerUnaryReactor* KvService::WriteAsync(
    grpc::CallbackServerContext* ctx, const Req* req, Resp* resp,
    const absl::Status& validation, bool grows_store,
    const std::function<void(internal::Request*)>& wrap,
    Resp ApplyResult::*result_field, std::function<grpc::Status()> blocking) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!validation.ok()) {
    reactor->Finish(ToGrpc(validation));
    return reactor;
  }
  if (grows_store && !RoomInQuota(req->ByteSizeLong())) {
    // Over the quota by the cached size: the blocking path decides (and
    // raises the NOSPACE alarm).
    Offload(reactor, std::move(blocking));
    return reactor;
  }
  StartWrite<Resp>(
      RequestDeadline(ctx), Forwarded(ctx), wrap, resp, result_field,
      [reactor](const grpc::Status& st) { reactor->Finish(st); },
      [this, reactor, blocking] { Offload(reactor, blocking); });
  return reactor;
}

template <typename Resp>
void KvService::StartWrite(absl::Time deadline, bool forwarded,
                           const std::function<void(internal::Request*)>& wrap,
                           Resp* resp, Resp ApplyResult::*result_field,
                           std::function<void(const grpc::Status&)> answer,
                           std::function<void()> refused) {
  const bool leader = node_->is_leader();
  const uint64_t leader_id = node_->leader();
  // The entry is appended in this term or not at all, so a leader change
  // that loses it is known as soon as this member applies the next term's
  // first entry (see KvStateMachine::Register).
  const uint64_t term = node_->term();
  if (!leader && (leader_id == 0 || forwarded)) {
    refused();
    return;
  }
  internal::Request r;
  wrap(&r);
  const uint64_t id = next_id_.fetch_add(1);
  r.set_version(1);
  r.set_origin_member(config_->member_id);
  r.set_id(id);
  std::string data = r.SerializeAsString();
  if (data.size() > config_->max_request_bytes) {
    answer(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "etcdserver: request is too large"));
    return;
  }
  // This member answers when it applies the entry, whoever proposed it.
  state_machine_->Register(
      id,
      [this, answer, resp, result_field](ApplyResult result) {
        if (!result.status.ok()) {
          answer(ToGrpc(result.status));
          return;
        }
        *resp = std::move(result.*result_field);
        FillHeader(resp->mutable_header());
        answer(grpc::Status::OK);
      },
      deadline, term);
  // Refused before it was appended (not the leader any more, a hand-over,
  // too many pending): the caller's slow path may place the write again
  // (it waits for the new leader and forwards).
  auto refuse = [this, id, refused] {
    if (state_machine_->Cancel(id)) refused();
  };
  if (leader) {
    node_->ProposeAsync(
        std::move(data),
        [refuse](absl::Status s) {
          if (!s.ok()) refuse();
        },
        term);
  } else if (!forwarder_->Send(
                 leader_id, term, id, std::move(data), deadline,
                 [refuse](const grpc::Status&) { refuse(); },
                 // The leader's result, unless this member's apply (or the
                 // deadline) answered first.
                 [this, id, answer, resp, result_field,
                  deadline](const internal::ProposalAcks::Ack& ack) {
                   if constexpr (kLeaseCommand<Resp>) {
                     if (ack.code() == 0) {
                       // This member's apply answers, or else (removed from
                       // the cluster, or far behind) the leader's result.
                       ApplyResult from_leader;
                       FromAck(ack, &(from_leader.*result_field));
                       (void)state_machine_->Rearm(
                           id,
                           std::min(deadline, MonotonicNow() + kOwnApplyWait),
                           std::move(from_leader));
                       return;
                     }
                   }
                   if (!state_machine_->Cancel(id)) return;
                   if (ack.code() != 0) {
                     answer(
                         grpc::Status(static_cast<grpc::StatusCode>(ack.code()),
                                      ack.message()));
                     return;
                   }
                   FromAck(ack, resp);
                   // Answered once this member has applied the write too,
                   // so the client's next read here sees it.
                   state_machine_->WhenApplied(
                       resp->header().revision(),
                       std::min(deadline, MonotonicNow() + kOwnApplyWait),
                       [this, answer, resp] {
                         FillHeader(resp->mutable_header());
                         answer(grpc::Status::OK);
                       });
                 })) {
    refuse();
  }
}

grpc::Status KvService::Replicate(grpc::ServerContextBase* ctx,
                                  internal::Request req, ApplyResult* result,
                                  const Forward& forward) {
  return ReplicateWith(
      ctx,
      [&](uint64_t id, absl::Time deadline, uint64_t term) -> absl::Status {
        req.set_version(1);
        req.set_origin_member(config_->member_id);
        req.set_id(id);
        std::string data = req.SerializeAsString();
        if (data.size() > config_->max_request_bytes) {
          return absl::InvalidArgumentError("etcdserver: request is too large");
        }
        return node_->Propose(std::move(data), deadline, term);
      },
      result, forward);
}

grpc::Status KvService::RelayWhileLeading(
    const Forward& forward, const std::shared_ptr<grpc::Channel>& channel,
    grpc::ClientContext* fwd, uint64_t leader, bool* leader_lost) {
  // A leader that stopped answering (paused, cut off) would hold the call
  // until its deadline. Once this member follows another leader, or none,
  // the old one is asked for its member list: no answer within
  // kRelayProbeWait, and the call is given up. One that answers goes on
  // (it may be handing over, e.g. to remove itself, and then forwards the
  // call to its successor), and is asked again every kRelayProbeEvery.
  // Relayed calls are rare (membership changes, physical compactions,
  // writes refused before they were appended), so a watcher thread each is
  // cheap.
  struct Watch {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    bool lost ABSL_GUARDED_BY(mu) = false;
  };
  Watch w;
  std::thread watcher([this, &w, fwd, leader, &channel] {
    absl::MutexLock lock(&w.mu);
    bool told_alive = false;
    while (!w.done) {
      absl::Duration next = absl::Milliseconds(50);
      if (node_->leader() != leader) {
        w.mu.Unlock();
        grpc::ClientContext probe;
        probe.set_deadline(ToGrpcDeadline(MonotonicNow() + kRelayProbeWait));
        etcdserverpb::MemberListRequest req;
        etcdserverpb::MemberListResponse resp;
        const bool alive = etcdserverpb::Cluster::NewStub(channel)
                               ->MemberList(&probe, req, &resp)
                               .ok();
        w.mu.Lock();
        if (w.done) break;
        if (!alive || !told_alive) {
          Logf(LogLevel::kInfo, "kv",
               "member %x stopped leading while a call relayed to it was "
               "open; %s",
               leader,
               alive ? "it still answers: waiting for its answer"
                     : "it does not answer: the call is given up, the client "
                       "is told 'leader changed'");
        }
        told_alive = alive;
        if (!alive) {
          w.lost = true;
          fwd->TryCancel();
          return;
        }
        next = kRelayProbeEvery;
      }
      AwaitFor(w.mu, absl::Condition(&w.done), next);
    }
  });
  grpc::Status st = forward(channel, fwd);
  bool lost;
  {
    absl::MutexLock lock(&w.mu);
    w.done = true;
    lost = w.lost;
  }
  watcher.join();
  *leader_lost = lost && !st.ok();
  return st;
}

grpc::Status KvService::ReplicateWith(grpc::ServerContextBase* ctx,
                                      const Proposer& propose,
                                      ApplyResult* result,
                                      const Forward& forward) {
  absl::Time deadline = RequestDeadline(ctx);
  // During an election, wait for its outcome as etcd does, rather than
  // failing the call.
  (void)node_->WaitForLeader(deadline);
  // Forwarding can race with a leader change: the member we believe leads
  // may have just handed over. It then refuses the write before proposing
  // it ("leader changed" / "no leader"), or answers "leader changed" once
  // the write is lost with its term, so trying the new leader cannot apply
  // it twice. Anything else, including a timeout after proposing, is
  // returned as it is.
  constexpr int kMaxForwards = 5;
  for (int attempt = 1; !node_->is_leader(); ++attempt) {
    uint64_t leader = node_->leader();
    if (leader == 0 || Forwarded(ctx)) return NotLeader(leader);
    std::shared_ptr<grpc::Channel> channel = PeerChannel(leader);
    if (channel == nullptr) return NotLeader(0);
    grpc::ClientContext fwd;
    fwd.set_deadline(ToGrpcDeadline(deadline));
    fwd.AddMetadata(kForwardedKey, "1");
    bool leader_lost = false;
    grpc::Status st =
        RelayWhileLeading(forward, channel, &fwd, leader, &leader_lost);
    if (leader_lost) {
      // The leader may have appended the write before it stopped
      // answering, and its successor may still commit it: trying again
      // could apply it twice. The client decides, as after a timeout.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: leader changed");
    }
    if (st.ok()) {
      // The leader answers once it has applied the write; a read barrier
      // (the leader's commit index, applied here) makes this member hold it
      // too before the client hears back, so its next read here sees it.
      // A member removed meanwhile fails the barrier at once.
      (void)node_->ReadBarrier(
          std::min(deadline, MonotonicNow() + kOwnApplyWait));
      return st;
    }
    if (!RefusedBeforeProposing(st) || attempt == kMaxForwards ||
        MonotonicNow() >= deadline) {
      return st;
    }
    // The new leader's first heartbeat tells us who it is.
    (void)node_->WaitForLeaderChange(
        std::min(deadline, MonotonicNow() + absl::Milliseconds(500)));
    (void)node_->WaitForLeader(deadline);
  }

  uint64_t id = next_id_.fetch_add(1);
  struct Wait {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    ApplyResult result ABSL_GUARDED_BY(mu);
  };
  auto wait = std::make_shared<Wait>();
  // Appended in this term or not at all: lost in a leader change, it is
  // answered "leader changed" once the next term's first entry applies.
  const uint64_t term = node_->term();
  state_machine_->Register(
      id,
      [wait](ApplyResult r) {
        absl::MutexLock lock(&wait->mu);
        wait->result = std::move(r);
        wait->done = true;
      },
      absl::InfiniteFuture(), term);
  absl::Status s = propose(id, deadline, term);
  if (!s.ok()) {
    state_machine_->Cancel(id);
    // The node's own refusals name no etcd error; a proposer's checks do.
    const bool from_node = !absl::StartsWith(s.message(), "etcdserver: ");
    if ((absl::IsUnavailable(s) || absl::IsFailedPrecondition(s)) &&
        from_node) {
      // The node refused the proposal before appending it: leadership is
      // being handed over (or this member was removed), or the term it was
      // meant for has just ended. Trying again under the next leader cannot
      // apply it twice, so the client does not hear of the hand-over. A
      // leader still in its term waits for the hand-over (an election
      // timeout at most).
      if (node_->is_leader() && node_->term() == term) {
        (void)node_->WaitForLeaderChange(std::min(
            deadline, MonotonicNow() + 2 * absl::Milliseconds(
                                               config_->election_timeout_ms)));
      }
      if ((!node_->is_leader() || node_->term() != term) &&
          MonotonicNow() < deadline) {
        return ReplicateWith(ctx, propose, result, forward);
      }
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: leader changed");
    }
    if (absl::IsDeadlineExceeded(s)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: request timed out");
    }
    return ToGrpc(s);
  }
  absl::MutexLock lock(&wait->mu);
  if (!AwaitUntil(wait->mu, absl::Condition(&wait->done), deadline)) {
    state_machine_->Cancel(id);
    // The write may still commit; etcd reports the same ambiguity.
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "etcdserver: request timed out");
  }
  *result = std::move(wait->result);
  return ToGrpc(result->status);
}

grpc::ServerUnaryReactor* KvService::Range(
    grpc::CallbackServerContext* ctx, const etcdserverpb::RangeRequest* req,
    etcdserverpb::RangeResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto local = [this, req, resp]() -> grpc::Status {
    absl::Status s = store_->Range(*req, resp);
    if (!s.ok()) return ToGrpc(s);
    FillHeader(resp->mutable_header());
    return grpc::Status::OK;
  };
  if (absl::Status s = kv::ValidateRange(*req); !s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  if (req->serializable()) {
    reactor->Finish(local());
    return reactor;
  }
  auto blocking = [this, ctx, req, resp] {
    return RangeBlocking(ctx, req, resp);
  };
  if (node_->leader() == 0) {
    // An election is under way: the blocking path waits for it.
    Offload(reactor, blocking);
    return reactor;
  }
  // The barrier may never pass (a read index request the core drops on a
  // leader that is handing over or being removed): the sweeper answers
  // the read at its deadline, as the blocking path would.
  auto pending = std::make_shared<PendingRead>();
  pending->reactor = reactor;
  pending->deadline = RequestDeadline(ctx);
  uint64_t id;
  {
    absl::MutexLock lock(&reads_mu_);
    id = next_read_++;
    pending_reads_.emplace(id, pending);
  }
  node_->ReadBarrierAsync([this, pending, id, local, blocking](absl::Status s) {
    // On the node's thread: the reading happens on the read workers.
    if (!pending->Claim()) return;  // timed out; the service may be gone
    {
      absl::MutexLock lock(&reads_mu_);
      pending_reads_.erase(id);
    }
    grpc::ServerUnaryReactor* reactor = pending->reactor;
    if (!s.ok()) {
      // Leader changed (or none): the blocking path waits for the next one.
      Offload(reactor, blocking);
      return;
    }
    if (!reads_.Submit([reactor, local] { reactor->Finish(local()); })) {
      reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                   "etcdserver: too many requests"));
    }
  });
  return reactor;
}

void KvService::ExpireReads(absl::Time now) {
  std::vector<std::shared_ptr<PendingRead>> expired;
  {
    absl::MutexLock lock(&reads_mu_);
    for (auto it = pending_reads_.begin(); it != pending_reads_.end();) {
      if (it->second->deadline <= now) {
        expired.push_back(std::move(it->second));
        it = pending_reads_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const std::shared_ptr<PendingRead>& read : expired) {
    if (!read->Claim()) continue;
    read->reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                       "etcdserver: request timed out"));
  }
}

grpc::Status KvService::RangeBlocking(grpc::ServerContextBase* ctx,
                                      const etcdserverpb::RangeRequest* req,
                                      etcdserverpb::RangeResponse* resp) {
  if (absl::Status s = kv::ValidateRange(*req); !s.ok()) return ToGrpc(s);
  if (!req->serializable()) {
    absl::Time deadline = RequestDeadline(ctx);
    (void)node_->WaitForLeader(deadline);
    absl::Status s = node_->ReadBarrier(deadline);
    if (!s.ok()) {
      if (absl::IsUnavailable(s)) return NotLeader(node_->leader());
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: request timed out");
    }
  }
  absl::Status s = store_->Range(*req, resp);
  if (!s.ok()) return ToGrpc(s);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

template <typename Resp>
std::optional<grpc::Status> KvService::WriteFast(
    grpc::ServerContextBase* ctx,
    const std::function<void(internal::Request*)>& wrap, Resp* resp,
    Resp ApplyResult::*result_field) {
  if (Forwarded(ctx)) return std::nullopt;
  struct Outcome {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    bool refused ABSL_GUARDED_BY(mu) = false;
    grpc::Status status ABSL_GUARDED_BY(mu);
  };
  auto outcome = std::make_shared<Outcome>();
  StartWrite<Resp>(
      RequestDeadline(ctx), /*forwarded=*/false, wrap, resp, result_field,
      [outcome](const grpc::Status& st) {
        absl::MutexLock lock(&outcome->mu);
        outcome->status = st;
        outcome->done = true;
      },
      [outcome] {
        absl::MutexLock lock(&outcome->mu);
        outcome->refused = true;
        outcome->done = true;
      });
  // No deadline of our own: `resp` is written before the answer, and the
  // answer always comes (the state machine's waiters expire at the
  // request's deadline).
  absl::MutexLock lock(&outcome->mu);
  outcome->mu.Await(absl::Condition(&outcome->done));
  if (outcome->refused) return std::nullopt;
  return outcome->status;
}
template std::optional<grpc::Status> KvService::WriteFast(
    grpc::ServerContextBase*, const std::function<void(internal::Request*)>&,
    etcdserverpb::LeaseGrantResponse*,
    etcdserverpb::LeaseGrantResponse ApplyResult::*);
template std::optional<grpc::Status> KvService::WriteFast(
    grpc::ServerContextBase*, const std::function<void(internal::Request*)>&,
    etcdserverpb::LeaseRevokeResponse*,
    etcdserverpb::LeaseRevokeResponse ApplyResult::*);

template <typename Req, typename Resp>
grpc::Status KvService::Write(
    grpc::ServerContextBase* ctx, const Req& req, Resp* resp,
    const std::function<void(internal::Request*)>& wrap,
    Resp ApplyResult::*result_field,
    grpc::Status (etcdserverpb::KV::Stub::*forward)(grpc::ClientContext*,
                                                    const Req&, Resp*)) {
  // The fast path first, as the callback API's writes take it: on a
  // follower the leader proposes the write on this member's behalf (one
  // batched stream; a write lost in a leader change is answered "leader
  // changed" about an election timeout later), instead of a call relayed
  // to the leader as a whole, which waits out its deadline when the leader
  // stops answering.
  if (std::optional<grpc::Status> st = WriteFast(ctx, wrap, resp, result_field);
      st.has_value()) {
    return *st;
  }
  return WriteReplicated(ctx, req, resp, wrap, result_field, forward);
}

template <typename Req, typename Resp>
grpc::Status KvService::WriteReplicated(
    grpc::ServerContextBase* ctx, const Req& req, Resp* resp,
    const std::function<void(internal::Request*)>& wrap,
    Resp ApplyResult::*result_field,
    grpc::Status (etcdserverpb::KV::Stub::*forward)(grpc::ClientContext*,
                                                    const Req&, Resp*)) {
  internal::Request r;
  wrap(&r);
  ApplyResult result;
  grpc::Status st = Replicate(ctx, std::move(r), &result,
                              [&](const std::shared_ptr<grpc::Channel>& channel,
                                  grpc::ClientContext* c) {
                                auto stub = etcdserverpb::KV::NewStub(channel);
                                return (stub.get()->*forward)(c, req, resp);
                              });
  if (!st.ok()) return st;
  // Forwarded calls come back filled; local ones from the apply result.
  if (!resp->has_header()) *resp = std::move(result.*result_field);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvService::Put(grpc::CallbackServerContext* ctx,
                                         const etcdserverpb::PutRequest* req,
                                         etcdserverpb::PutResponse* resp) {
  return WriteAsync<etcdserverpb::PutRequest, etcdserverpb::PutResponse>(
      ctx, req, resp, kv::ValidatePut(*req), /*grows_store=*/true,
      [req](internal::Request* r) { *r->mutable_put() = *req; },
      &ApplyResult::put,
      [this, ctx, req, resp] { return PutBlocking(ctx, req, resp); });
}

grpc::ServerUnaryReactor* KvService::DeleteRange(
    grpc::CallbackServerContext* ctx,
    const etcdserverpb::DeleteRangeRequest* req,
    etcdserverpb::DeleteRangeResponse* resp) {
  return WriteAsync<etcdserverpb::DeleteRangeRequest,
                    etcdserverpb::DeleteRangeResponse>(
      ctx, req, resp, kv::ValidateDeleteRange(*req), /*grows_store=*/false,
      [req](internal::Request* r) { *r->mutable_delete_range() = *req; },
      &ApplyResult::delete_range,
      [this, ctx, req, resp] { return DeleteRangeBlocking(ctx, req, resp); });
}

grpc::ServerUnaryReactor* KvService::Txn(grpc::CallbackServerContext* ctx,
                                         const etcdserverpb::TxnRequest* req,
                                         etcdserverpb::TxnResponse* resp) {
  return WriteAsync<etcdserverpb::TxnRequest, etcdserverpb::TxnResponse>(
      ctx, req, resp,
      kv::ValidateTxn(*req, static_cast<int64_t>(config_->max_txn_ops)),
      /*grows_store=*/true,
      [req](internal::Request* r) { *r->mutable_txn() = *req; },
      &ApplyResult::txn,
      [this, ctx, req, resp] { return TxnBlocking(ctx, req, resp); });
}

grpc::Status KvService::PutBlocking(grpc::ServerContextBase* ctx,
                                    const etcdserverpb::PutRequest* req,
                                    etcdserverpb::PutResponse* resp) {
  if (absl::Status s = kv::ValidatePut(*req); !s.ok()) return ToGrpc(s);
  if (OverQuota(ctx, req->ByteSizeLong())) return ToGrpc(kv::ErrNoSpace());
  return Write(
      ctx, *req, resp, [&](internal::Request* r) { *r->mutable_put() = *req; },
      &ApplyResult::put, &etcdserverpb::KV::Stub::Put);
}

grpc::Status KvService::DeleteRangeBlocking(
    grpc::ServerContextBase* ctx, const etcdserverpb::DeleteRangeRequest* req,
    etcdserverpb::DeleteRangeResponse* resp) {
  if (absl::Status s = kv::ValidateDeleteRange(*req); !s.ok()) {
    return ToGrpc(s);
  }
  return Write(
      ctx, *req, resp,
      [&](internal::Request* r) { *r->mutable_delete_range() = *req; },
      &ApplyResult::delete_range, &etcdserverpb::KV::Stub::DeleteRange);
}

grpc::Status KvService::TxnBlocking(grpc::ServerContextBase* ctx,
                                    const etcdserverpb::TxnRequest* req,
                                    etcdserverpb::TxnResponse* resp) {
  if (absl::Status s =
          kv::ValidateTxn(*req, static_cast<int64_t>(config_->max_txn_ops));
      !s.ok()) {
    return ToGrpc(s);
  }
  if (OverQuota(ctx, req->ByteSizeLong())) return ToGrpc(kv::ErrNoSpace());
  return Write(
      ctx, *req, resp, [&](internal::Request* r) { *r->mutable_txn() = *req; },
      &ApplyResult::txn, &etcdserverpb::KV::Stub::Txn);
}

bool KvService::RoomInQuota(size_t request_bytes) {
  const uint64_t quota = config_->QuotaBytes();
  // Reading RocksDB's size properties costs a dozen lookups; on the write
  // path a figure at most 100 ms old is plenty.
  const int64_t now_ns = absl::GetCurrentTimeNanos();
  if (now_ns - size_checked_ns_.load() > 100'000'000) {
    size_bytes_ = store_->ApproximateSizeBytes();
    size_checked_ns_ = now_ns;
  }
  return size_bytes_.load() + request_bytes <= quota;
}

bool KvService::OverQuota(grpc::ServerContextBase* ctx, size_t request_bytes) {
  if (RoomInQuota(request_bytes)) return false;
  for (const auto& a : store_->Alarms()) {
    if (a.alarm() == etcdserverpb::NOSPACE) return true;  // already raised
  }
  etcdserverpb::AlarmRequest alarm;
  alarm.set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  alarm.set_memberid(config_->member_id);
  alarm.set_alarm(etcdserverpb::NOSPACE);
  etcdserverpb::AlarmResponse ignored;
  (void)Alarm(ctx, &alarm, &ignored);
  return true;
}

grpc::Status KvService::Alarm(grpc::ServerContextBase* ctx,
                              const etcdserverpb::AlarmRequest* req,
                              etcdserverpb::AlarmResponse* resp) {
  if (req->action() == etcdserverpb::AlarmRequest::GET) {
    // As etcd's: the alarms of the type asked (NONE: all of them).
    for (const auto& a : store_->Alarms()) {
      if (req->alarm() == etcdserverpb::NONE || a.alarm() == req->alarm()) {
        *resp->add_alarms() = a;
      }
    }
    FillHeader(resp->mutable_header());
    return grpc::Status::OK;
  }
  internal::Request r;
  *r.mutable_alarm() = *req;
  // The fast path first, as for KV writes (see Write).
  if (std::optional<grpc::Status> st = WriteFast(
          ctx, [&r](internal::Request* out) { *out = r; }, resp,
          &ApplyResult::alarm);
      st.has_value()) {
    if (st->ok()) FillHeader(resp->mutable_header());
    return *st;
  }
  ApplyResult result;
  grpc::Status st =
      Replicate(ctx, std::move(r), &result,
                [&](const std::shared_ptr<grpc::Channel>& channel,
                    grpc::ClientContext* c) {
                  return etcdserverpb::Maintenance::NewStub(channel)->Alarm(
                      c, *req, resp);
                });
  if (!st.ok()) return st;
  if (!resp->has_header()) *resp = std::move(result.alarm);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status KvService::Compact(grpc::ServerContext* ctx,
                                const etcdserverpb::CompactionRequest* req,
                                etcdserverpb::CompactionResponse* resp) {
  auto wrap = [&](internal::Request* r) { *r->mutable_compaction() = *req; };
  if (!req->physical()) {
    // As any write: on a follower, proposed by the leader on its behalf and
    // bound to the term it knows (see Write).
    return Write(ctx, *req, resp, wrap, &ApplyResult::compaction,
                 &etcdserverpb::KV::Stub::Compact);
  }
  bool local = node_->is_leader();
  // Relayed as a whole call from a follower: the leader reclaims the space
  // of a physical compaction before it answers.
  grpc::Status st =
      WriteReplicated(ctx, *req, resp, wrap, &ApplyResult::compaction,
                      &etcdserverpb::KV::Stub::Compact);
  if (!st.ok() || !local) return st;
  // Reclaim the space before answering, as etcd's physical flag asks (a
  // forwarded call was answered by the leader after doing so).
  absl::MutexLock lock(compaction_mu_);
  while (true) {
    absl::StatusOr<bool> done = store_->CompactSome(10000);
    if (!done.ok()) return ToGrpc(done.status());
    if (*done) return grpc::Status::OK;
  }
}

}  // namespace lockd
