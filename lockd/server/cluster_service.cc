#include "lockd/server/cluster_service.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lockd/util/clock.h"

namespace lockd {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

absl::Status MemberNotFound() {
  return absl::NotFoundError("etcdserver: member not found");
}

// A learner may be promoted once it has replicated at least this share of
// the leader's log (etcd's rule).
constexpr double kLearnerReadyPercent = 0.9;
// etcd allows one learner at a time.
constexpr int kLearnersMax = 1;

// Forwards the original call to the leader's Cluster service.
template <typename Req, typename Resp>
KvService::Forward ForwardTo(
    grpc::Status (etcdserverpb::Cluster::Stub::*method)(grpc::ClientContext*,
                                                        const Req&, Resp*),
    const Req& req, Resp* resp) {
  return [method, &req, resp](const std::shared_ptr<grpc::Channel>& channel,
                              grpc::ClientContext* c) {
    auto stub = etcdserverpb::Cluster::NewStub(channel);
    return (stub.get()->*method)(c, req, resp);
  };
}

size_t Voters(const MemberList& table) {
  size_t voters = 0;
  for (const auto& m : table) voters += !m.islearner();
  return voters;
}

}  // namespace

template <typename Resp>
grpc::Status ClusterService::Answer(const grpc::Status& st,
                                    const ApplyResult& result, Resp* resp) {
  if (!st.ok()) return st;
  // A forwarded call comes back answered; a local one from the new table.
  if (!resp->has_header()) {
    for (const auto& m : result.members) *resp->add_members() = m;
  }
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

absl::Status MoveLeadership(raft::RaftNode* node, uint64_t target,
                            absl::Time deadline) {
  if (node->leader() == target) return absl::OkStatus();
  if (absl::Status s = node->TransferLeadership(target, deadline); !s.ok()) {
    return s;
  }
  // Done when the target leads; a transfer aborts after an election timeout
  // if the target cannot catch up.
  while (node->leader() != target) {
    if (MonotonicNow() > deadline) {
      return absl::UnavailableError(
          "etcdserver: request timed out, leader transfer took too long");
    }
    (void)node->WaitForLeaderChange(MonotonicNow() + absl::Milliseconds(100));
  }
  return absl::OkStatus();
}

void ClusterService::FillHeader(etcdserverpb::ResponseHeader* h) const {
  h->set_cluster_id(config_->cluster_id);
  h->set_member_id(config_->member_id);
  h->set_raft_term(node_->term());
}

absl::Status ClusterService::CheckStarted(size_t voters_after,
                                          uint64_t leaving) {
  if (!config_->strict_reconfig_check) return absl::OkStatus();
  // Raft marks a member active when it answers the leader; a leader learns
  // that within a heartbeat of taking office, and forgets it at each
  // check-quorum round until the next answer. So a member counts as started
  // if it answers within an election timeout.
  const absl::Time deadline =
      MonotonicNow() + absl::Milliseconds(config_->election_timeout_ms);
  while (true) {
    absl::StatusOr<raft::NodeStatus> st =
        node_->Status(MonotonicNow() + absl::Seconds(5));
    if (!st.ok()) return st.status();
    size_t started = 0;
    for (const auto& [id, pr] : st->progress) {
      if (id == leaving) continue;
      if (id == config_->member_id || pr.recent_active) ++started;
    }
    if (started >= voters_after / 2 + 1) return absl::OkStatus();
    if (MonotonicNow() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(config_->heartbeat_interval_ms));
  }
  return absl::FailedPreconditionError(
      "etcdserver: re-configuration failed due to not enough started "
      "members");
}

grpc::Status ClusterService::ChangeMembers(
    grpc::ServerContext* ctx, raft::ConfChange cc,
    const etcdserverpb::Member& member,
    const std::function<absl::Status()>& check, ApplyResult* result,
    const KvService::Forward& forward) {
  return kv_->ReplicateWith(
      ctx,
      [&](uint64_t id, absl::Time deadline, uint64_t term) -> absl::Status {
        if (absl::Status s = check(); !s.ok()) return s;
        internal::MemberChange context;
        context.set_version(1);
        context.set_origin_member(config_->member_id);
        context.set_id(id);
        *context.mutable_member() = member;
        cc.context = context.SerializeAsString();
        return node_->ProposeConfChange(cc, deadline, term);
      },
      result, forward);
}

grpc::Status ClusterService::MemberAdd(
    grpc::ServerContext* ctx, const etcdserverpb::MemberAddRequest* req,
    etcdserverpb::MemberAddResponse* resp) {
  std::vector<Url> urls;
  for (const std::string& text : req->peerurls()) {
    absl::StatusOr<Url> u = ParseUrl(text);
    if (!u.ok() || u->port == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "etcdserver: given member URLs are invalid");
    }
    urls.push_back(*u);
  }
  if (urls.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "etcdserver: given member URLs are invalid");
  }
  // etcd derives a new member's ID from its URLs, the cluster token and the
  // time, so re-adding the same URLs later gives a new ID.
  etcdserverpb::Member member;
  member.set_id(
      ComputeMemberId(urls, absl::StrCat(config_->initial_cluster_token, "@",
                                         absl::ToUnixSeconds(absl::Now()))));
  for (const Url& u : urls) member.add_peerurls(u.ToString());
  member.set_islearner(req->islearner());

  raft::ConfChange cc;
  cc.transition = req->islearner() ? raft::ConfChangeTransition::kAuto
                                   : raft::ConfChangeTransition::kJointImplicit;
  cc.changes.push_back({req->islearner() ? raft::ConfChangeType::kAddLearnerNode
                                         : raft::ConfChangeType::kAddNode,
                        member.id()});
  auto check = [&]() -> absl::Status {
    lockd::MemberList table = membership_->Members();
    size_t voters = 0;
    int learners = 0;
    for (const auto& m : table) {
      for (const std::string& u : m.peerurls()) {
        for (const Url& mine : urls) {
          if (u == mine.ToString()) {
            return absl::FailedPreconditionError(
                "etcdserver: Peer URLs already exists");
          }
        }
      }
      if (m.islearner()) {
        ++learners;
      } else {
        ++voters;
      }
    }
    for (const auto& m : table) {
      if (m.id() == member.id()) {
        return absl::FailedPreconditionError(
            "etcdserver: member ID already exist");
      }
    }
    if (req->islearner()) {
      if (learners >= kLearnersMax) {
        return absl::FailedPreconditionError(
            "etcdserver: too many learner members in cluster");
      }
      return absl::OkStatus();
    }
    return CheckStarted(voters + 1, 0);
  };
  ApplyResult result;
  grpc::Status st = ChangeMembers(
      ctx, cc, member, check, &result,
      ForwardTo(&etcdserverpb::Cluster::Stub::MemberAdd, *req, resp));
  if (st.ok() && !resp->has_header()) *resp->mutable_member() = member;
  return Answer(st, result, resp);
}

grpc::Status ClusterService::MemberRemove(
    grpc::ServerContext* ctx, const etcdserverpb::MemberRemoveRequest* req,
    etcdserverpb::MemberRemoveResponse* resp) {
  std::optional<etcdserverpb::Member> member = membership_->Find(req->id());
  if (!member.has_value()) return ToGrpc(MemberNotFound());
  // The leader does not remove itself: it hands leadership to the most
  // caught-up voter first, and the call goes on to the new leader.
  if (node_->is_leader() && req->id() == config_->member_id) {
    absl::StatusOr<raft::NodeStatus> st =
        node_->Status(MonotonicNow() + absl::Seconds(5));
    if (!st.ok()) return ToGrpc(st.status());
    uint64_t target = 0, best = 0;
    for (const auto& [id, pr] : st->progress) {
      if (id == config_->member_id || pr.is_learner) continue;
      if (pr.match >= best) {
        best = pr.match;
        target = id;
      }
    }
    if (target == 0) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "etcdserver: re-configuration failed due to not "
                          "enough started members");
    }
    if (absl::Status s =
            MoveLeadership(node_, target, MonotonicNow() + absl::Seconds(10));
        !s.ok()) {
      return ToGrpc(s);
    }
  }
  raft::ConfChange cc;
  cc.transition = member->islearner()
                      ? raft::ConfChangeTransition::kAuto
                      : raft::ConfChangeTransition::kJointImplicit;
  cc.changes.push_back({raft::ConfChangeType::kRemoveNode, req->id()});
  etcdserverpb::Member subject;
  subject.set_id(req->id());
  auto check = [&]() -> absl::Status {
    std::optional<etcdserverpb::Member> m = membership_->Find(req->id());
    if (!m.has_value()) return MemberNotFound();
    if (req->id() == config_->member_id) {
      // Leadership came back here; let the caller retry.
      return absl::UnavailableError("etcdserver: leader changed");
    }
    if (m->islearner()) return absl::OkStatus();
    return CheckStarted(Voters(membership_->Members()) - 1, req->id());
  };
  ApplyResult result;
  return Answer(
      ChangeMembers(
          ctx, cc, subject, check, &result,
          ForwardTo(&etcdserverpb::Cluster::Stub::MemberRemove, *req, resp)),
      result, resp);
}

grpc::Status ClusterService::MemberPromote(
    grpc::ServerContext* ctx, const etcdserverpb::MemberPromoteRequest* req,
    etcdserverpb::MemberPromoteResponse* resp) {
  raft::ConfChange cc;
  cc.transition = raft::ConfChangeTransition::kJointImplicit;
  cc.changes.push_back({raft::ConfChangeType::kAddNode, req->id()});
  etcdserverpb::Member subject;
  subject.set_id(req->id());
  auto check = [&]() -> absl::Status {
    std::optional<etcdserverpb::Member> m = membership_->Find(req->id());
    if (!m.has_value()) return MemberNotFound();
    if (!m->islearner()) {
      return absl::FailedPreconditionError(
          "etcdserver: can only promote a learner member");
    }
    absl::StatusOr<raft::NodeStatus> st =
        node_->Status(MonotonicNow() + absl::Seconds(5));
    if (!st.ok()) return st.status();
    auto it = st->progress.find(req->id());
    const uint64_t leader_match =
        st->progress.count(config_->member_id)
            ? st->progress.at(config_->member_id).match
            : st->hard_state.commit;
    if (it == st->progress.end() ||
        static_cast<double>(it->second.match) <
            static_cast<double>(leader_match) * kLearnerReadyPercent) {
      return absl::FailedPreconditionError(
          "etcdserver: can only promote a learner member which is in sync "
          "with leader");
    }
    return CheckStarted(Voters(membership_->Members()) + 1, 0);
  };
  ApplyResult result;
  return Answer(
      ChangeMembers(
          ctx, cc, subject, check, &result,
          ForwardTo(&etcdserverpb::Cluster::Stub::MemberPromote, *req, resp)),
      result, resp);
}

grpc::Status ClusterService::MemberUpdate(
    grpc::ServerContext* ctx, const etcdserverpb::MemberUpdateRequest* req,
    etcdserverpb::MemberUpdateResponse* resp) {
  for (const std::string& text : req->peerurls()) {
    absl::StatusOr<Url> u = ParseUrl(text);
    if (!u.ok() || u->port == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "etcdserver: given member URLs are invalid");
    }
  }
  if (req->peerurls_size() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "etcdserver: given member URLs are invalid");
  }
  if (!membership_->Find(req->id()).has_value()) {
    return ToGrpc(MemberNotFound());
  }
  internal::Request r;
  *r.mutable_member_update() = *req;
  ApplyResult result;
  return Answer(
      kv_->Replicate(
          ctx, std::move(r), &result,
          ForwardTo(&etcdserverpb::Cluster::Stub::MemberUpdate, *req, resp)),
      result, resp);
}

grpc::Status ClusterService::Publish(grpc::ServerContext* ctx,
                                     const etcdserverpb::Member* member,
                                     etcdserverpb::MemberListResponse* resp) {
  internal::Request r;
  etcdserverpb::Member* attrs = r.mutable_member_attributes();
  attrs->set_id(member->id());
  attrs->set_name(member->name());
  *attrs->mutable_clienturls() = member->clienturls();
  ApplyResult result;
  grpc::Status st = kv_->Replicate(
      ctx, std::move(r), &result,
      [&](const std::shared_ptr<grpc::Channel>& channel,
          grpc::ClientContext* c) {
        return internal::Peer::NewStub(channel)->Publish(c, *member, resp);
      });
  return Answer(st, result, resp);
}

grpc::Status ClusterService::MemberList(
    grpc::ServerContext* ctx, const etcdserverpb::MemberListRequest* req,
    etcdserverpb::MemberListResponse* resp) {
  if (req->linearizable()) {
    absl::Time deadline = MonotonicNow() + absl::Seconds(7);
    (void)node_->WaitForLeader(deadline);
    if (absl::Status s = node_->ReadBarrier(deadline); !s.ok()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          node_->leader() == 0
                              ? "etcdserver: no leader"
                              : "etcdserver: request timed out");
    }
  }
  FillHeader(resp->mutable_header());
  for (const auto& m : membership_->Members()) *resp->add_members() = m;
  return grpc::Status::OK;
}

}  // namespace lockd
