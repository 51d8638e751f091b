#include "raft/core/raft.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "raft/core/check.h"

namespace lockd::raft {

namespace {

// Context of a vote request sent because of a leadership transfer; it lets
// the request through the leader lease of the other nodes (thesis §3.10).
constexpr char kCampaignTransfer[] = "CampaignTransfer";

MessageType VoteRespMsgType(MessageType t) {
  switch (t) {
    case MessageType::kVote:
      return MessageType::kVoteResp;
    case MessageType::kPreVote:
      return MessageType::kPreVoteResp;
    default:
      RAFT_FATAL("not a vote message: %s", MessageTypeName(t));
  }
}

uint64_t PayloadsSize(const std::vector<Entry>& es) {
  uint64_t s = 0;
  for (const Entry& e : es) s += e.PayloadSize();
  return s;
}

}  // namespace

const char* StateTypeName(StateType s) {
  switch (s) {
    case StateType::kFollower:
      return "StateFollower";
    case StateType::kCandidate:
      return "StateCandidate";
    case StateType::kLeader:
      return "StateLeader";
    case StateType::kPreCandidate:
      return "StatePreCandidate";
  }
  return "?";
}

absl::Status Config::Validate() const {
  if (id == kNone) return absl::InvalidArgumentError("cannot use none as id");
  if (heartbeat_tick <= 0) {
    return absl::InvalidArgumentError("heartbeat tick must be greater than 0");
  }
  if (election_tick <= heartbeat_tick) {
    return absl::InvalidArgumentError(
        "election tick must be greater than heartbeat tick");
  }
  if (storage == nullptr) {
    return absl::InvalidArgumentError("storage cannot be nil");
  }
  if (max_inflight_msgs <= 0) {
    return absl::InvalidArgumentError("max inflight messages must be > 0");
  }
  if (max_inflight_bytes != 0 && max_inflight_bytes < max_size_per_msg_bytes) {
    return absl::InvalidArgumentError(
        "max inflight bytes must be >= max message size");
  }
  if (max_pending_read_index <= 0) {
    return absl::InvalidArgumentError("max pending read index must be > 0");
  }
  return absl::OkStatus();
}

Raft::Raft(const Config& c)
    : id_(c.id),
      raft_log_(c.storage, c.max_committed_size_per_ready_bytes != 0
                               ? c.max_committed_size_per_ready_bytes
                               : c.max_size_per_msg_bytes),
      max_msg_size_(c.max_size_per_msg_bytes),
      max_uncommitted_size_(c.max_uncommitted_entries_bytes == 0
                                ? kNoLimit
                                : c.max_uncommitted_entries_bytes),
      max_pending_read_index_(static_cast<size_t>(c.max_pending_read_index)),
      trk_(static_cast<size_t>(c.max_inflight_msgs), c.max_inflight_bytes),
      check_quorum_(c.check_quorum),
      pre_vote_(c.pre_vote),
      check_invariants_(c.check_invariants),
      heartbeat_timeout_(c.heartbeat_tick),
      election_timeout_(c.election_tick),
      rng_(c.seed ^ (c.id * 0x9e3779b97f4a7c15ULL)) {
  absl::Status valid = c.Validate();
  RAFT_CHECK(valid.ok(), "invalid raft config: %s", valid.ToString());
  HardState hs;
  ConfState cs;
  absl::Status s = c.storage->InitialState(&hs, &cs);
  RAFT_CHECK(s.ok(), "storage InitialState: %s", s.ToString());
  absl::StatusOr<ConfigAndProgress> cp =
      RestoreConfig(trk_, raft_log_.LastIndex(), cs);
  RAFT_CHECK(cp.ok(), "restore config %s: %s", DescribeConfState(cs),
             cp.status().ToString());
  const ConfState got = SwitchToConfig(*std::move(cp));
  RAFT_CHECK(got == cs, "restored conf state %s differs from %s",
             DescribeConfState(got), DescribeConfState(cs));
  if (!hs.IsEmpty()) {
    RAFT_CHECK(hs.commit >= raft_log_.committed() &&
                   hs.commit <= raft_log_.LastIndex(),
               "%d state.commit %d is out of range [%d, %d]", id_, hs.commit,
               raft_log_.committed(), raft_log_.LastIndex());
    raft_log_.CommitTo(hs.commit);
    term_ = hs.term;
    vote_ = hs.vote;
  }
  if (c.applied > 0) raft_log_.AppliedTo(c.applied);
  BecomeFollower(term_, kNone);
}

bool Raft::promotable() const {
  auto it = trk_.progress.find(id_);
  return it != trk_.progress.end() && !it->second.is_learner &&
         !raft_log_.HasPendingSnapshot();
}

// ----------------------------------------------------------------------------
// Sending

void Raft::Send(Message m) {
  if (m.from == kNone) m.from = id_;
  if (m.type == MessageType::kVote || m.type == MessageType::kVoteResp ||
      m.type == MessageType::kPreVote || m.type == MessageType::kPreVoteResp) {
    // Vote messages carry the term of the election, which for pre-votes is
    // a future term.
    RAFT_CHECK(m.term != 0, "term should be set when sending %s",
               MessageTypeName(m.type));
  } else {
    RAFT_CHECK(m.term == 0, "term should not be set when sending %s (was %d)",
               MessageTypeName(m.type), m.term);
    // Proposals and read requests forwarded to the leader are handled like
    // local messages, without a term.
    if (m.type != MessageType::kProp && m.type != MessageType::kReadIndex) {
      m.term = term_;
    }
  }
  msgs_.push_back(std::move(m));
}

bool Raft::MaybeSendAppend(uint64_t to, bool send_if_empty,
                           bool announces_commit) {
  auto it = trk_.progress.find(to);
  if (it == trk_.progress.end() || to == id_) return false;
  Progress& pr = it->second;
  if (pr.IsPaused()) return false;

  const uint64_t prev_index = pr.next - 1;
  absl::StatusOr<uint64_t> prev_term = raft_log_.Term(prev_index);
  absl::StatusOr<std::vector<Entry>> ents = std::vector<Entry>{};
  // In replicate state with a full window, send only an empty append (to
  // carry the commit index).
  if (pr.state != ProgressState::kReplicate || !pr.inflights.Full()) {
    ents = raft_log_.EntriesFrom(pr.next, max_msg_size_);
  }
  if (ents.ok() && ents->empty() && !send_if_empty) return false;

  if (!prev_term.ok() || !ents.ok()) {
    // The entries the follower needs are compacted: send a snapshot
    // (thesis §5.1 / Raft §7).
    if (!pr.recent_active) return false;
    absl::StatusOr<Snapshot> snap = raft_log_.GetSnapshot();
    if (!snap.ok()) {
      if (IsSnapshotTemporarilyUnavailable(snap.status())) return false;
      RAFT_FATAL("snapshot: %s", snap.status().ToString());
    }
    RAFT_CHECK(!snap->IsEmpty(), "need non-empty snapshot");
    pr.BecomeSnapshot(snap->metadata.index);
    Message m;
    m.type = MessageType::kSnap;
    m.to = to;
    m.snapshot = *std::move(snap);
    Send(std::move(m));
    return true;
  }

  Message m;
  m.type = MessageType::kApp;
  m.to = to;
  m.index = prev_index;
  m.log_term = *prev_term;
  m.entries = *std::move(ents);
  m.commit = raft_log_.committed();
  // An empty append to a follower that has acknowledged every entry up to
  // it, or that was sent all of them and is announced a new commit index:
  // its answer could only repeat (or arrive after) the answers to the
  // appends that carried the entries, so it is told not to send one. A lost
  // answer is recovered as before: the append resent on a heartbeat's
  // answer (kHeartbeatResp) is not an announcement, so it is answered.
  m.commit_only = m.entries.empty() && pr.state == ProgressState::kReplicate &&
                  (pr.match == prev_index || announces_commit);
  const size_t n = m.entries.size();
  const uint64_t bytes = PayloadsSize(m.entries);
  const uint64_t next = pr.next;
  Send(std::move(m));
  pr.UpdateOnEntriesSend(n, bytes, next);
  return true;
}

void Raft::SendHeartbeat(uint64_t to, const std::string& ctx) {
  const Progress& pr = trk_.progress.at(to);
  // The follower may not have all committed entries yet: never tell it to
  // commit past what it is known to match.
  Message m;
  m.type = MessageType::kHeartbeat;
  m.to = to;
  m.commit = std::min(pr.match, raft_log_.committed());
  m.context = ctx;
  Send(std::move(m));
}

void Raft::BcastAppend(bool announces_commit) {
  for (const auto& [id, pr] : trk_.progress) {
    if (id == id_) continue;
    MaybeSendAppend(id, true, announces_commit);
  }
}

void Raft::BcastHeartbeat() {
  BcastHeartbeatWithCtx(read_index_queue_.empty() ? std::string()
                                                  : read_index_queue_.back());
}

void Raft::BcastHeartbeatWithCtx(const std::string& ctx) {
  for (const auto& [id, pr] : trk_.progress) {
    if (id == id_) continue;
    SendHeartbeat(id, ctx);
  }
}

void Raft::SendTimeoutNow(uint64_t to) {
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = to;
  Send(std::move(m));
}

// ----------------------------------------------------------------------------
// Log and commit

bool Raft::MaybeCommit() {
  return raft_log_.MaybeCommit(trk_.Committed(), term_);
}

void Raft::OnCommitAdvanced() {
  ReleasePendingReadIndexMessages();
  BcastAppend(/*announces_commit=*/true);
}

bool Raft::IncreaseUncommittedSize(const std::vector<Entry>& es) {
  uint64_t s = 0;
  bool has_conf_change = false;
  for (const Entry& e : es) {
    s += e.PayloadSize();
    has_conf_change |= e.type == EntryType::kConfChange;
  }
  // Always admit a proposal when nothing is outstanding (so one large entry
  // can't wedge the leader) and conf changes (so leaving a joint config is
  // never blocked by application traffic).
  if (uncommitted_size_ > 0 && s > 0 && !has_conf_change &&
      uncommitted_size_ + s > max_uncommitted_size_) {
    return false;
  }
  uncommitted_size_ += s;
  return true;
}

void Raft::ReduceUncommittedSize(uint64_t bytes) {
  uncommitted_size_ = bytes > uncommitted_size_ ? 0 : uncommitted_size_ - bytes;
}

bool Raft::AppendEntry(std::vector<Entry>* es) {
  const uint64_t li = raft_log_.LastIndex();
  for (size_t i = 0; i < es->size(); ++i) {
    (*es)[i].term = term_;
    (*es)[i].index = li + 1 + i;
  }
  if (!IncreaseUncommittedSize(*es)) return false;
  raft_log_.Append(std::move(*es));
  // The leader counts itself only once its entries are durable (see
  // OnPersisted), so it may send them before persisting (thesis §10.2.1).
  return true;
}

void Raft::OnPersisted(uint64_t last_index, uint64_t last_term,
                       uint64_t snap_index) {
  if (snap_index != 0) raft_log_.StableSnapTo(snap_index);
  if (last_index == 0) return;
  raft_log_.StableTo(last_index, last_term);
  if (state_ != StateType::kLeader) return;
  auto it = trk_.progress.find(id_);
  if (it == trk_.progress.end()) return;
  // Entries persisted under a different term may have been overwritten
  // since the Ready was handed out.
  if (!raft_log_.MatchTerm(last_index, last_term)) return;
  if (it->second.MaybeUpdate(last_index) && MaybeCommit()) OnCommitAdvanced();
}

void Raft::OnApplied(uint64_t applied, uint64_t committed_bytes) {
  if (applied > raft_log_.applied()) raft_log_.AppliedTo(applied);
  ReduceUncommittedSize(committed_bytes);
  MaybeAutoLeave();
}

void Raft::MaybeAutoLeave() {
  // Leave a joint config once its entry is applied (thesis §4.3); like any
  // conf change, only after committing in this term.
  if (state_ != StateType::kLeader || !trk_.config.auto_leave ||
      raft_log_.applied() < pending_conf_index_ ||
      !CommittedEntryInCurrentTerm() || lead_transferee_ != kNone) {
    return;
  }
  Message m;
  m.type = MessageType::kProp;
  m.from = id_;
  Entry e;
  e.type = EntryType::kConfChange;
  e.data = EncodeConfChange(ConfChange{});
  m.entries.push_back(std::move(e));
  (void)Step(std::move(m));
}

// ----------------------------------------------------------------------------
// Roles

void Raft::Reset(uint64_t term) {
  if (term_ != term) {
    term_ = term;
    vote_ = kNone;
  }
  lead_ = kNone;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  AbortLeaderTransfer();
  trk_.ResetVotes();
  const uint64_t last = raft_log_.LastIndex();
  // What this node has durably: entries below the unstable offset.
  const uint64_t stable_last =
      raft_log_.HasPendingSnapshot() ? 0 : raft_log_.unstable().offset() - 1;
  for (auto& [id, pr] : trk_.progress) {
    const bool learner = pr.is_learner;
    pr = trk_.MakeProgress();
    pr.next = last + 1;
    pr.is_learner = learner;
    if (id == id_) {
      pr.match = std::min(stable_last, last);
      pr.recent_active = true;  // a node is always in touch with itself
    }
  }
  pending_conf_index_ = 0;
  uncommitted_size_ = 0;
  pending_read_index_.clear();
  read_index_queue_.clear();
  pending_read_index_messages_.clear();
}

void Raft::ResetRandomizedElectionTimeout() {
  randomized_election_timeout_ =
      election_timeout_ +
      static_cast<int>(rng_.Uniform(static_cast<uint64_t>(election_timeout_)));
}

void Raft::BecomeFollower(uint64_t term, uint64_t lead) {
  Reset(term);
  lead_ = lead;
  state_ = StateType::kFollower;
}

void Raft::BecomeCandidate() {
  RAFT_CHECK(state_ != StateType::kLeader,
             "invalid transition [leader -> candidate]");
  Reset(term_ + 1);
  vote_ = id_;
  state_ = StateType::kCandidate;
}

void Raft::BecomePreCandidate() {
  RAFT_CHECK(state_ != StateType::kLeader,
             "invalid transition [leader -> pre-candidate]");
  // A pre-candidate changes neither term nor vote (thesis §9.6).
  trk_.ResetVotes();
  lead_ = kNone;
  state_ = StateType::kPreCandidate;
}

void Raft::BecomeLeader() {
  RAFT_CHECK(state_ != StateType::kFollower,
             "invalid transition [follower -> leader]");
  Reset(term_);
  lead_ = id_;
  state_ = StateType::kLeader;
  trk_.progress.at(id_).BecomeReplicate();
  // Conf changes wait until everything before this term is applied.
  pending_conf_index_ = raft_log_.LastIndex();
  // The no-op of the new term (Raft §8): committing it commits all earlier
  // entries and enables ReadIndex and conf changes.
  std::vector<Entry> noop(1);
  RAFT_CHECK(AppendEntry(&noop), "empty entry was dropped");
  noop.clear();
  // The no-op is not counted against the uncommitted-bytes budget.
  uncommitted_size_ = 0;
}

void Raft::Tick() {
  if (state_ == StateType::kLeader) {
    TickHeartbeat();
  } else {
    TickElection();
  }
}

void Raft::TickElection() {
  ++election_elapsed_;
  if (promotable() && PastElectionTimeout()) {
    election_elapsed_ = 0;
    Message m;
    m.type = MessageType::kHup;
    m.from = id_;
    (void)Step(std::move(m));
  }
}

void Raft::TickHeartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= election_timeout_) {
    election_elapsed_ = 0;
    if (check_quorum_) {
      Message m;
      m.type = MessageType::kCheckQuorum;
      m.from = id_;
      (void)Step(std::move(m));
    }
    // A transfer that did not finish within an election timeout is aborted
    // so proposals flow again (thesis §3.10).
    if (state_ == StateType::kLeader && lead_transferee_ != kNone) {
      AbortLeaderTransfer();
      MaybeHandOffLeadership();  // a removed leader keeps trying
    }
  }
  if (state_ != StateType::kLeader) return;
  if (heartbeat_elapsed_ >= heartbeat_timeout_) {
    heartbeat_elapsed_ = 0;
    Message m;
    m.type = MessageType::kBeat;
    m.from = id_;
    (void)Step(std::move(m));
  }
}

void Raft::Hup(CampaignType t) {
  if (state_ == StateType::kLeader) return;
  if (!promotable()) return;
  // A node that has committed but unapplied conf changes does not know its
  // own configuration yet.
  if (raft_log_.committed() > raft_log_.applied()) {
    absl::StatusOr<std::vector<Entry>> ents = raft_log_.Slice(
        raft_log_.applied() + 1, raft_log_.committed() + 1, kNoLimit);
    RAFT_CHECK(ents.ok(), "unexpected error getting unapplied entries: %s",
               ents.status().ToString());
    for (const Entry& e : *ents) {
      if (e.type == EntryType::kConfChange) return;
    }
  }
  Campaign(t);
}

void Raft::Campaign(CampaignType t) {
  if (!promotable()) return;
  uint64_t term;
  MessageType vote_msg;
  if (t == CampaignType::kPreElection) {
    BecomePreCandidate();
    vote_msg = MessageType::kPreVote;
    // Pre-votes ask about the next term without incrementing ours.
    term = term_ + 1;
  } else {
    BecomeCandidate();
    vote_msg = MessageType::kVote;
    term = term_;
  }
  if (Poll(id_, VoteRespMsgType(vote_msg), true) == VoteResult::kWon) {
    // Single-voter configuration: won by our own vote.
    if (t == CampaignType::kPreElection) {
      Campaign(CampaignType::kElection);
    } else {
      BecomeLeader();
      BcastAppend();
    }
    return;
  }
  for (uint64_t id : trk_.config.voters.IDs()) {
    if (id == id_) continue;
    Message m;
    m.type = vote_msg;
    m.to = id;
    m.term = term;
    m.index = raft_log_.LastIndex();
    m.log_term = raft_log_.LastTerm();
    if (t == CampaignType::kTransfer) m.context = kCampaignTransfer;
    Send(std::move(m));
  }
}

VoteResult Raft::Poll(uint64_t id, MessageType t, bool granted) {
  (void)t;
  trk_.RecordVote(id, granted);
  return trk_.TallyVotes(nullptr, nullptr);
}

// ----------------------------------------------------------------------------
// Step

absl::Status Raft::Step(Message m) {
  if (m.term == 0) {
    // Local message (or a forwarded proposal / read request).
  } else if (m.term > term_) {
    if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
      const bool force = m.context == kCampaignTransfer;
      // Leader stickiness (thesis §4.2.3): a node that heard from a leader
      // within the minimum election timeout ignores disruptive votes, e.g.
      // from a removed node.
      const bool in_lease = check_quorum_ && lead_ != kNone &&
                            election_elapsed_ < election_timeout_;
      if (!force && in_lease) return absl::OkStatus();
    }
    if (m.type == MessageType::kPreVote) {
      // Never change our term in response to a pre-vote.
    } else if (m.type == MessageType::kPreVoteResp && !m.reject) {
      // A granted pre-vote response carries the future term of our
      // pre-campaign; the term only changes when the real election starts.
    } else if (m.type == MessageType::kApp ||
               m.type == MessageType::kHeartbeat ||
               m.type == MessageType::kSnap) {
      BecomeFollower(m.term, m.from);
    } else {
      BecomeFollower(m.term, kNone);
    }
  } else if (m.term < term_) {
    if ((check_quorum_ || pre_vote_) &&
        (m.type == MessageType::kHeartbeat || m.type == MessageType::kApp)) {
      // A stale leader (e.g. after a partition) learns the new term from
      // this response and steps down; otherwise, with check-quorum or
      // pre-vote, it could never be told (thesis §9.6).
      Message resp;
      resp.type = MessageType::kAppResp;
      resp.to = m.from;
      Send(std::move(resp));
    } else if (m.type == MessageType::kPreVote ||
               m.type == MessageType::kVote) {
      // Tell a candidate from an older term about ours, or it could keep
      // campaigning in the past forever (nobody else writes to it).
      Message resp;
      resp.type = VoteRespMsgType(m.type);
      resp.to = m.from;
      resp.term = term_;
      resp.reject = true;
      AddCommitHint(&resp, m.index);
      Send(std::move(resp));
    }
    return absl::OkStatus();
  }

  if (m.type == MessageType::kVoteResp || m.type == MessageType::kPreVoteResp) {
    MaybeCommitFromHint(m);
  }

  switch (m.type) {
    case MessageType::kHup:
      Hup(pre_vote_ ? CampaignType::kPreElection : CampaignType::kElection);
      return absl::OkStatus();
    case MessageType::kVote:
    case MessageType::kPreVote: {
      // Raft §5.2, §5.4.1; thesis §9.6 for pre-votes.
      const bool can_vote = vote_ == m.from ||
                            (vote_ == kNone && lead_ == kNone) ||
                            (m.type == MessageType::kPreVote && m.term > term_);
      Message resp;
      resp.type = VoteRespMsgType(m.type);
      resp.to = m.from;
      AddCommitHint(&resp, m.index);
      if (can_vote && raft_log_.IsUpToDate(m.index, m.log_term)) {
        // The response carries the election's term, not ours.
        resp.term = m.term;
        Send(std::move(resp));
        if (m.type == MessageType::kVote) {
          election_elapsed_ = 0;
          vote_ = m.from;
        }
      } else {
        resp.term = term_;
        resp.reject = true;
        Send(std::move(resp));
      }
      return absl::OkStatus();
    }
    default:
      break;
  }
  switch (state_) {
    case StateType::kLeader:
      return StepLeader(m);
    case StateType::kCandidate:
    case StateType::kPreCandidate:
      return StepCandidate(m);
    case StateType::kFollower:
      return StepFollower(m);
  }
  return absl::OkStatus();
}

void Raft::AddCommitHint(Message* resp, uint64_t candidate_last) const {
  // Vote responses tell the candidate how far this node knows the log to
  // be committed (capped at the candidate's last index), with the term
  // there.
  const uint64_t c = std::min(raft_log_.committed(), candidate_last);
  resp->commit = c;
  resp->log_term = raft_log_.ZeroTermOnError(c);
}

void Raft::MaybeCommitFromHint(const Message& m) {
  // If our entry at the hinted index has the hinted term, log matching
  // makes our prefix identical to the responder's committed prefix, so it
  // is committed. Without this, a voter of a new configuration that missed
  // the commit of the change could wait forever for votes from old voters
  // whose (uncommitted) log tail is longer than its own.
  if (m.commit > raft_log_.committed() && m.log_term != 0 &&
      raft_log_.MatchTerm(m.commit, m.log_term)) {
    raft_log_.CommitTo(m.commit);
  }
}

bool Raft::CommittedEntryInCurrentTerm() const {
  return raft_log_.ZeroTermOnError(raft_log_.committed()) == term_;
}

absl::Status Raft::CheckConfChangeProposal(const Entry& e) const {
  absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
  if (!cc.ok()) return absl::InvalidArgumentError(cc.status().message());
  if (!CommittedEntryInCurrentTerm()) {
    return absl::FailedPreconditionError(
        "leader has not yet committed an entry in its term");
  }
  if (pending_conf_index_ > raft_log_.applied()) {
    return absl::FailedPreconditionError(
        "possible unapplied conf change; retry after it is applied");
  }
  const bool already_joint = trk_.config.voters.IsJoint();
  const bool wants_leave = cc->LeavesJoint();
  if (already_joint && !wants_leave) {
    return absl::FailedPreconditionError(
        "must transition out of joint config first");
  }
  if (!already_joint && wants_leave) {
    return absl::FailedPreconditionError(
        "not in joint state; refusing empty conf change");
  }
  for (const ConfChangeSingle& c : cc->changes) {
    if (c.node_id == kNone) {
      return absl::InvalidArgumentError("conf change with node id 0");
    }
  }
  // Every earlier conf change is applied, so the current configuration is
  // exactly the one this change will be applied to: validate it now rather
  // than fail when it is applied.
  Changer changer(trk_, raft_log_.LastIndex());
  bool auto_leave = false;
  absl::StatusOr<ConfigAndProgress> r =
      wants_leave ? changer.LeaveJoint()
      : cc->EntersJoint(&auto_leave)
          ? changer.EnterJoint(auto_leave, cc->changes)
          : changer.Simple(cc->changes);
  if (!r.ok()) return absl::InvalidArgumentError(r.status().message());
  return absl::OkStatus();
}

absl::Status Raft::HandlePropose(Message& m) {
  if (m.entries.empty()) {
    return absl::InvalidArgumentError("empty proposal");
  }
  if (!IsVoter()) {
    return absl::UnavailableError(
        "leader was removed from the configuration; handing off leadership");
  }
  if (lead_transferee_ != kNone) {
    return absl::FailedPreconditionError(absl::StrCat(
        "leadership transfer to ", lead_transferee_, " in progress"));
  }
  for (const Entry& e : m.entries) {
    if (e.type != EntryType::kConfChange) continue;
    absl::Status s = CheckConfChangeProposal(e);
    if (!s.ok()) return s;
    if (m.entries.size() > 1) {
      return absl::InvalidArgumentError(
          "a conf change must be proposed on its own");
    }
  }
  const uint64_t last = raft_log_.LastIndex();
  const bool is_conf = m.entries[0].type == EntryType::kConfChange;
  if (!AppendEntry(&m.entries)) {
    return absl::ResourceExhaustedError(
        "too many uncommitted bytes; proposal dropped");
  }
  if (is_conf) pending_conf_index_ = last + 1;
  BcastAppend();
  return absl::OkStatus();
}

absl::Status Raft::StepLeader(Message& m) {
  switch (m.type) {
    case MessageType::kBeat:
      BcastHeartbeat();
      return absl::OkStatus();
    case MessageType::kCheckQuorum: {
      auto self = trk_.progress.find(id_);
      if (self != trk_.progress.end()) self->second.recent_active = true;
      if (!trk_.QuorumActive()) {
        BecomeFollower(term_, kNone);
        return absl::OkStatus();
      }
      for (auto& [id, pr] : trk_.progress) {
        if (id != id_) pr.recent_active = false;
      }
      return absl::OkStatus();
    }
    case MessageType::kProp:
      return HandlePropose(m);
    case MessageType::kReadIndex:
      // Thesis §6.4: a leader can serve reads only once it knows the
      // commit index of its term.
      if (!CommittedEntryInCurrentTerm()) {
        if (pending_read_index_messages_.size() >= max_pending_read_index_) {
          return absl::ResourceExhaustedError("too many pending reads");
        }
        pending_read_index_messages_.push_back(std::move(m));
        return absl::OkStatus();
      }
      SendReadIndexResponse(std::move(m));
      return absl::OkStatus();
    default:
      break;
  }

  auto it = trk_.progress.find(m.from);
  if (it == trk_.progress.end()) return absl::OkStatus();
  Progress& pr = it->second;
  switch (m.type) {
    case MessageType::kAppResp: {
      if (m.index > raft_log_.LastIndex() && !m.reject) {
        ProtocolViolation();
        return absl::OkStatus();
      }
      pr.recent_active = true;
      if (m.reject) {
        // Fast backtracking (Raft §5.3 "optimization"): jump to the last
        // index with a term <= the follower's conflicting term.
        uint64_t next_probe = m.reject_hint;
        if (m.log_term > 0) {
          next_probe =
              raft_log_.FindConflictByTerm(m.reject_hint, m.log_term).first;
        }
        if (pr.MaybeDecrTo(m.index, next_probe)) {
          if (pr.state == ProgressState::kReplicate) pr.BecomeProbe();
          SendAppend(m.from);
        }
        return absl::OkStatus();
      }
      const bool old_paused = pr.IsPaused();
      if (pr.MaybeUpdate(m.index) ||
          (pr.match == m.index && pr.state == ProgressState::kProbe)) {
        switch (pr.state) {
          case ProgressState::kProbe:
            pr.BecomeReplicate();
            break;
          case ProgressState::kSnapshot:
            if (pr.match >= pr.pending_snapshot) {
              pr.BecomeProbe();
              pr.BecomeReplicate();
            }
            break;
          case ProgressState::kReplicate:
            pr.inflights.FreeLE(m.index);
            break;
        }
        if (MaybeCommit()) {
          OnCommitAdvanced();
        } else if (old_paused) {
          SendAppend(m.from);
        }
        // The window may have room for several messages now.
        while (MaybeSendAppend(m.from, false)) {
        }
        if (m.from == lead_transferee_ && pr.match == raft_log_.LastIndex()) {
          SendTimeoutNow(m.from);
        }
      }
      return absl::OkStatus();
    }
    case MessageType::kHeartbeatResp: {
      pr.recent_active = true;
      pr.msg_app_flow_paused = false;
      if (pr.state == ProgressState::kReplicate && pr.inflights.Full()) {
        pr.inflights.FreeFirstOne();
      }
      if (pr.match < raft_log_.LastIndex() ||
          pr.state == ProgressState::kProbe) {
        SendAppend(m.from);
      }
      if (m.context.empty()) return absl::OkStatus();
      auto rs = pending_read_index_.find(m.context);
      if (rs == pending_read_index_.end()) return absl::OkStatus();
      rs->second.acks[m.from] = true;
      if (trk_.VoteResultOf(rs->second.acks) != VoteResult::kWon) {
        return absl::OkStatus();
      }
      // A quorum confirmed leadership as of this request: answer it and
      // every request queued before it (batching, thesis §6.4).
      std::vector<ReadIndexStatus> done;
      while (!read_index_queue_.empty()) {
        std::string ctx = std::move(read_index_queue_.front());
        read_index_queue_.pop_front();
        auto st = pending_read_index_.find(ctx);
        RAFT_CHECK(st != pending_read_index_.end(),
                   "cannot find read index status for queued request");
        done.push_back(std::move(st->second));
        pending_read_index_.erase(st);
        if (ctx == m.context) break;
      }
      for (const ReadIndexStatus& s : done) {
        Message resp = ResponseToReadIndexReq(s.req, s.index);
        if (resp.to != kNone) Send(std::move(resp));
      }
      return absl::OkStatus();
    }
    case MessageType::kSnapStatus:
      if (pr.state != ProgressState::kSnapshot) return absl::OkStatus();
      if (m.reject) pr.pending_snapshot = 0;
      pr.BecomeProbe();
      // Wait for a heartbeat response before probing again.
      pr.msg_app_flow_paused = true;
      return absl::OkStatus();
    case MessageType::kUnreachable:
      // Optimistic streaming is pointless if the peer is unreachable.
      if (pr.state == ProgressState::kReplicate) pr.BecomeProbe();
      return absl::OkStatus();
    case MessageType::kTransferLeader: {
      if (pr.is_learner) {
        return absl::InvalidArgumentError(
            "cannot transfer leadership to a learner");
      }
      const uint64_t transferee = m.from;
      if (lead_transferee_ != kNone) {
        if (lead_transferee_ == transferee) return absl::OkStatus();
        AbortLeaderTransfer();
      }
      if (transferee == id_) return absl::OkStatus();
      // The transfer must finish within an election timeout.
      election_elapsed_ = 0;
      lead_transferee_ = transferee;
      if (pr.match == raft_log_.LastIndex()) {
        SendTimeoutNow(transferee);
      } else {
        SendAppend(transferee);
      }
      return absl::OkStatus();
    }
    default:
      return absl::OkStatus();
  }
}

absl::Status Raft::StepCandidate(Message& m) {
  const MessageType my_resp = state_ == StateType::kPreCandidate
                                  ? MessageType::kPreVoteResp
                                  : MessageType::kVoteResp;
  switch (m.type) {
    case MessageType::kProp:
      return absl::UnavailableError("no leader; proposal dropped");
    case MessageType::kReadIndex:
      return absl::UnavailableError("no leader; read index dropped");
    case MessageType::kApp:
      BecomeFollower(m.term, m.from);
      HandleAppendEntries(m);
      return absl::OkStatus();
    case MessageType::kHeartbeat:
      BecomeFollower(m.term, m.from);
      HandleHeartbeat(m);
      return absl::OkStatus();
    case MessageType::kSnap:
      BecomeFollower(m.term, m.from);
      HandleSnapshot(m);
      return absl::OkStatus();
    default:
      break;
  }
  if (m.type == my_resp) {
    const VoteResult r = Poll(m.from, m.type, !m.reject);
    if (r == VoteResult::kWon) {
      if (state_ == StateType::kPreCandidate) {
        Campaign(CampaignType::kElection);
      } else {
        BecomeLeader();
        BcastAppend();
      }
    } else if (r == VoteResult::kLost) {
      // A pre-candidate that lost stays at its term.
      BecomeFollower(term_, kNone);
    }
  }
  return absl::OkStatus();
}

absl::Status Raft::StepFollower(Message& m) {
  switch (m.type) {
    case MessageType::kProp:
      // Proposals are not forwarded: the caller learns right away that this
      // node can't take them and where the leader is.
      if (lead_ == kNone) {
        return absl::UnavailableError("no leader; proposal dropped");
      }
      return absl::UnavailableError(
          absl::StrCat("not the leader; leader is ", lead_));
    case MessageType::kApp:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleAppendEntries(m);
      return absl::OkStatus();
    case MessageType::kHeartbeat:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleHeartbeat(m);
      return absl::OkStatus();
    case MessageType::kSnap:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleSnapshot(m);
      return absl::OkStatus();
    case MessageType::kTransferLeader:
      if (lead_ == kNone) {
        return absl::UnavailableError("no leader; transfer dropped");
      }
      m.to = lead_;
      m.term = 0;
      Send(std::move(m));
      return absl::OkStatus();
    case MessageType::kTimeoutNow:
      // Thesis §3.10: campaign at once, through the others' leader lease.
      Hup(CampaignType::kTransfer);
      return absl::OkStatus();
    case MessageType::kReadIndex:
      if (lead_ == kNone) {
        return absl::UnavailableError("no leader; read index dropped");
      }
      m.to = lead_;
      m.term = 0;
      Send(std::move(m));
      return absl::OkStatus();
    case MessageType::kReadIndexResp:
      read_states_.push_back(ReadState{m.index, std::move(m.context)});
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

void Raft::HandleAppendEntries(Message& m) {
  // Reject malformed appends: entries must follow m.index contiguously with
  // non-decreasing terms no newer than the message; a commit-only append
  // carries none.
  if (m.commit_only && !m.entries.empty()) {
    ProtocolViolation();
    return;
  }
  uint64_t prev_term = m.log_term;
  for (size_t i = 0; i < m.entries.size(); ++i) {
    const Entry& e = m.entries[i];
    if (e.index != m.index + 1 + i || e.term < prev_term || e.term > m.term) {
      ProtocolViolation();
      return;
    }
    prev_term = e.term;
  }
  Message resp;
  resp.type = MessageType::kAppResp;
  resp.to = m.from;
  if (m.index < raft_log_.committed()) {
    resp.index = raft_log_.committed();
    Send(std::move(resp));
    return;
  }
  bool conflict_with_committed = false;
  std::optional<uint64_t> last_new =
      raft_log_.MaybeAppend(m.index, m.log_term, m.commit, std::move(m.entries),
                            &conflict_with_committed);
  if (conflict_with_committed) {
    ProtocolViolation();
    return;
  }
  if (last_new.has_value()) {
    if (m.commit_only) return;
    resp.index = *last_new;
    Send(std::move(resp));
    return;
  }
  // Reject, with a hint for fast backtracking: the largest index <= m.index
  // whose term is <= m.log_term. The leader can skip every index above it.
  const uint64_t hint_index = std::min(m.index, raft_log_.LastIndex());
  const auto [idx, t] = raft_log_.FindConflictByTerm(hint_index, m.log_term);
  resp.index = m.index;
  resp.reject = true;
  resp.reject_hint = idx;
  resp.log_term = t;
  Send(std::move(resp));
}

void Raft::HandleHeartbeat(const Message& m) {
  // The leader never sends a commit past our match; clamp anything else.
  raft_log_.CommitTo(std::min(m.commit, raft_log_.LastIndex()));
  Message resp;
  resp.type = MessageType::kHeartbeatResp;
  resp.to = m.from;
  resp.context = m.context;
  Send(std::move(resp));
}

void Raft::HandleSnapshot(Message& m) {
  const SnapshotMetadata& md = m.snapshot.metadata;
  if (md.index == 0 || md.term == 0 || md.term > m.term) {
    ProtocolViolation();
    return;
  }
  Message resp;
  resp.type = MessageType::kAppResp;
  resp.to = m.from;
  if (Restore(std::move(m.snapshot))) {
    resp.index = raft_log_.LastIndex();
  } else {
    resp.index = raft_log_.committed();
  }
  Send(std::move(resp));
}

bool Raft::Restore(Snapshot s) {
  if (s.metadata.index <= raft_log_.committed()) return false;
  if (state_ != StateType::kFollower) {
    // Defense in depth: a non-follower must never install a snapshot.
    BecomeFollower(term_ + 1, kNone);
    return false;
  }
  // The snapshot's config may predate this node's addition (the leader
  // only sends to members of its current config, and its latest snapshot
  // can be older than the change that added us). Installing it is safe: we
  // stay non-promotable until we apply the change that adds us.
  const ConfState& cs = s.metadata.conf_state;
  if (raft_log_.MatchTerm(s.metadata.index, s.metadata.term)) {
    // We already have the snapshot's entries: fast-forward the commit.
    raft_log_.CommitTo(s.metadata.index);
    return false;
  }
  absl::StatusOr<ConfigAndProgress> cp =
      RestoreConfig(trk_, s.metadata.index, cs);
  if (!cp.ok()) {
    ProtocolViolation();
    return false;
  }
  raft_log_.Restore(std::move(s));
  SwitchToConfig(*std::move(cp));
  auto self = trk_.progress.find(id_);
  if (self != trk_.progress.end()) {
    self->second.MaybeUpdate(self->second.next - 1);
  }
  return true;
}

absl::StatusOr<ConfState> Raft::ApplyConfChange(const ConfChange& cc) {
  Changer changer(trk_, raft_log_.LastIndex());
  bool auto_leave = false;
  absl::StatusOr<ConfigAndProgress> r =
      cc.LeavesJoint()              ? changer.LeaveJoint()
      : cc.EntersJoint(&auto_leave) ? changer.EnterJoint(auto_leave, cc.changes)
                                    : changer.Simple(cc.changes);
  if (!r.ok()) return r.status();
  return SwitchToConfig(*std::move(r));
}

ConfState Raft::SwitchToConfig(ConfigAndProgress cp) {
  trk_.config = std::move(cp.config);
  trk_.progress = std::move(cp.progress);
  ConfState cs = trk_.GetConfState();
  auto it = trk_.progress.find(id_);
  const bool found = it != trk_.progress.end();
  is_learner_ = found && it->second.is_learner;
  if ((!found || is_learner_) && state_ != StateType::kLeader) {
    // A removed or demoted candidate gives up.
    if (state_ != StateType::kFollower) BecomeFollower(term_, kNone);
    return cs;
  }
  if (state_ != StateType::kLeader || cs.voters.empty()) return cs;
  // The quorum may have changed: maybe commit, and bring new nodes up.
  if (MaybeCommit()) {
    OnCommitAdvanced();
  } else {
    for (const auto& [id, pr] : trk_.progress) {
      if (id != id_) MaybeSendAppend(id, false);
    }
  }
  if (lead_transferee_ != kNone &&
      trk_.config.voters.incoming.count(lead_transferee_) == 0) {
    AbortLeaderTransfer();
  }
  MaybeHandOffLeadership();
  return cs;
}

bool Raft::IsVoter() const {
  auto it = trk_.progress.find(id_);
  return it != trk_.progress.end() && !it->second.is_learner;
}

void Raft::MaybeHandOffLeadership() {
  // A leader removed or demoted by a config it applied keeps leading (so
  // the new voters keep learning the commit index, without which they could
  // stay stuck in the old configuration) but hands leadership to the most
  // up-to-date new voter at once (thesis §4.2.2 "steps down").
  if (state_ != StateType::kLeader || IsVoter() || lead_transferee_ != kNone) {
    return;
  }
  uint64_t best = kNone;
  uint64_t best_match = 0;
  for (uint64_t id : trk_.config.voters.incoming) {
    const Progress& pr = trk_.progress.at(id);
    if (id == id_) continue;
    if (best == kNone || pr.match > best_match) {
      best = id;
      best_match = pr.match;
    }
  }
  if (best == kNone) return;
  Message m;
  m.type = MessageType::kTransferLeader;
  m.from = best;
  (void)StepLeader(m);
}

// ----------------------------------------------------------------------------
// ReadIndex (thesis §6.4)

void Raft::SendReadIndexResponse(Message m) {
  // Only the single voter itself may skip the heartbeat round; a removed
  // leader still handing off must hear from the new voter.
  if (trk_.IsSingleton() && IsVoter()) {
    Message resp = ResponseToReadIndexReq(m, raft_log_.committed());
    if (resp.to != kNone) Send(std::move(resp));
    return;
  }
  if (pending_read_index_.count(m.context) > 0) return;  // duplicate ctx
  if (pending_read_index_.size() >= max_pending_read_index_) return;
  const std::string ctx = m.context;
  ReadIndexStatus st;
  st.index = raft_log_.committed();
  st.req = std::move(m);
  st.acks[id_] = true;  // the leader acks itself
  pending_read_index_.emplace(ctx, std::move(st));
  read_index_queue_.push_back(ctx);
  BcastHeartbeatWithCtx(ctx);
}

void Raft::ReleasePendingReadIndexMessages() {
  if (pending_read_index_messages_.empty()) return;
  if (!CommittedEntryInCurrentTerm()) return;
  std::vector<Message> msgs = std::move(pending_read_index_messages_);
  pending_read_index_messages_.clear();
  for (Message& m : msgs) SendReadIndexResponse(std::move(m));
}

Message Raft::ResponseToReadIndexReq(const Message& req, uint64_t read_index) {
  if (req.from == kNone || req.from == id_) {
    read_states_.push_back(ReadState{read_index, req.context});
    return Message{};
  }
  Message resp;
  resp.type = MessageType::kReadIndexResp;
  resp.to = req.from;
  resp.index = read_index;
  resp.context = req.context;
  return resp;
}

// ----------------------------------------------------------------------------
// Invariants

void Raft::CheckInvariants() const {
  const uint64_t first = raft_log_.FirstIndex();
  const uint64_t last = raft_log_.LastIndex();
  const uint64_t committed = raft_log_.committed();
  const uint64_t applied = raft_log_.applied();
  RAFT_CHECK(committed <= last, "%d: committed %d > last index %d", id_,
             committed, last);
  RAFT_CHECK(applied <= committed, "%d: applied %d > committed %d", id_,
             applied, committed);
  RAFT_CHECK(committed + 1 >= first, "%d: committed %d below first index %d",
             id_, committed, first);
  RAFT_CHECK(raft_log_.LastTerm() <= term_, "%d: last log term %d > term %d",
             id_, raft_log_.LastTerm(), term_);
  // Unstable entries are contiguous with non-decreasing terms.
  const Unstable& u = raft_log_.unstable();
  uint64_t prev_term = 0;
  for (size_t i = 0; i < u.entries().size(); ++i) {
    const Entry& e = u.entries()[i];
    RAFT_CHECK(e.index == u.offset() + i, "%d: unstable entry %d at slot %d",
               id_, e.index, i);
    RAFT_CHECK(e.term >= prev_term, "%d: unstable term decreases at %d", id_,
               e.index);
    prev_term = e.term;
  }
  absl::Status cfg = CheckConfigInvariants(trk_.config, trk_.progress);
  RAFT_CHECK(cfg.ok(), "%d: config invariant: %s", id_, cfg.ToString());
  RAFT_CHECK(randomized_election_timeout_ >= election_timeout_ &&
                 randomized_election_timeout_ < 2 * election_timeout_,
             "%d: randomized election timeout %d out of range", id_,
             randomized_election_timeout_);
  switch (state_) {
    case StateType::kLeader: {
      RAFT_CHECK(lead_ == id_, "%d: leader with lead %d", id_, lead_);
      RAFT_CHECK(vote_ == id_, "%d: leader voted for %d", id_, vote_);
      RAFT_CHECK(IsVoter() || lead_transferee_ != kNone,
                 "%d: removed leader is not handing off leadership", id_);
      RAFT_CHECK(pending_conf_index_ <= last, "%d: pending conf index %d > %d",
                 id_, pending_conf_index_, last);
      for (const auto& [id, pr] : trk_.progress) {
        RAFT_CHECK(pr.match <= last, "%d: progress %d match %d > last %d", id_,
                   id, pr.match, last);
        RAFT_CHECK(pr.next >= pr.match + 1 || id == id_,
                   "%d: progress %d next %d <= match %d", id_, id, pr.next,
                   pr.match);
        RAFT_CHECK(pr.next <= last + 1 || id == id_,
                   "%d: progress %d next %d > last+1 %d", id_, id, pr.next,
                   last + 1);
      }
      break;
    }
    case StateType::kCandidate:
      RAFT_CHECK(vote_ == id_, "%d: candidate voted for %d", id_, vote_);
      RAFT_CHECK(lead_ == kNone, "%d: candidate with lead %d", id_, lead_);
      break;
    case StateType::kPreCandidate:
      RAFT_CHECK(lead_ == kNone, "%d: pre-candidate with lead %d", id_, lead_);
      break;
    case StateType::kFollower:
      RAFT_CHECK(lead_ != id_, "%d: follower follows itself", id_);
      break;
  }
  if (state_ != StateType::kFollower) {
    RAFT_CHECK(promotable() || state_ == StateType::kLeader,
               "%d: non-promotable node in state %s", id_,
               StateTypeName(state_));
    RAFT_CHECK(!is_learner_ || state_ == StateType::kLeader,
               "%d: learner in state %s", id_, StateTypeName(state_));
  }
}

}  // namespace lockd::raft
