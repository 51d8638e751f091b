#include "raft/core/raw_node.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/core/check.h"

namespace lockd::raft {

bool MaySendBeforePersisting(const Ready& rd, const Message& m) {
  if (rd.term_or_vote_changed) return false;
  return m.type == MessageType::kApp || m.type == MessageType::kHeartbeat ||
         m.type == MessageType::kSnap;
}

absl::StatusOr<std::unique_ptr<RawNode>> RawNode::Create(const Config& config) {
  absl::Status s = config.Validate();
  if (!s.ok()) return s;
  return std::unique_ptr<RawNode>(new RawNode(std::make_unique<Raft>(config)));
}

RawNode::RawNode(std::unique_ptr<Raft> r) : raft_(std::move(r)) {
  prev_soft_state_ = raft_->GetSoftState();
  prev_hard_state_ = raft_->GetHardState();
  MaybeCheckInvariants();
}

void RawNode::MaybeCheckInvariants() const {
  // Config::check_invariants decides; the node reads it through Raft.
  raft_->CheckInvariantsIfEnabled();
}

void RawNode::Tick() {
  raft_->Tick();
  MaybeCheckInvariants();
}

absl::Status RawNode::StepLocal(Message m) {
  m.from = m.from == kNone ? raft_->id() : m.from;
  absl::Status s = raft_->Step(std::move(m));
  MaybeCheckInvariants();
  return s;
}

absl::Status RawNode::Campaign() {
  Message m;
  m.type = MessageType::kHup;
  return StepLocal(std::move(m));
}

absl::Status RawNode::Propose(std::string data) {
  Message m;
  m.type = MessageType::kProp;
  m.entries.resize(1);
  m.entries[0].data = std::move(data);
  return StepLocal(std::move(m));
}

absl::Status RawNode::ProposeBatch(std::vector<std::string> data) {
  if (data.empty()) return absl::OkStatus();
  Message m;
  m.type = MessageType::kProp;
  m.entries.resize(data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    m.entries[i].data = std::move(data[i]);
  }
  return StepLocal(std::move(m));
}

absl::Status RawNode::ProposeConfChange(const ConfChange& cc) {
  Message m;
  m.type = MessageType::kProp;
  m.entries.resize(1);
  m.entries[0].type = EntryType::kConfChange;
  m.entries[0].data = EncodeConfChange(cc);
  return StepLocal(std::move(m));
}

absl::StatusOr<ConfState> RawNode::ApplyConfChange(const ConfChange& cc) {
  absl::StatusOr<ConfState> cs = raft_->ApplyConfChange(cc);
  MaybeCheckInvariants();
  return cs;
}

absl::Status RawNode::Step(Message m) {
  if (IsLocalMessage(m.type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot step local message ", MessageTypeName(m.type)));
  }
  if (m.term == 0 && m.type != MessageType::kProp &&
      m.type != MessageType::kReadIndex) {
    return absl::InvalidArgumentError(
        absl::StrCat(MessageTypeName(m.type), " without a term"));
  }
  if (m.from == kNone || m.from == raft_->id()) {
    return absl::InvalidArgumentError("message from an invalid sender");
  }
  if (m.to != raft_->id()) {
    return absl::InvalidArgumentError("message addressed to another node");
  }
  if (IsResponseMessage(m.type) &&
      raft_->tracker().progress.count(m.from) == 0) {
    return absl::NotFoundError(
        absl::StrCat("response from unknown peer ", m.from));
  }
  if (m.type == MessageType::kProp) {
    // Remote proposals are not accepted: lockd forwards client requests
    // above the core, where the outcome can be reported to the client.
    return absl::InvalidArgumentError("remote proposals are not accepted");
  }
  absl::Status s = raft_->Step(std::move(m));
  MaybeCheckInvariants();
  return s;
}

absl::Status RawNode::ReadIndex(std::string ctx) {
  Message m;
  m.type = MessageType::kReadIndex;
  m.context = std::move(ctx);
  return StepLocal(std::move(m));
}

absl::Status RawNode::TransferLeadership(uint64_t transferee) {
  if (transferee == kNone) {
    return absl::InvalidArgumentError("transferee must not be 0");
  }
  Message m;
  m.type = MessageType::kTransferLeader;
  m.from = transferee;
  return StepLocal(std::move(m));
}

void RawNode::ReportUnreachable(uint64_t id) {
  Message m;
  m.type = MessageType::kUnreachable;
  m.from = id;
  (void)StepLocal(std::move(m));
}

void RawNode::ReportSnapshot(uint64_t id, bool success) {
  Message m;
  m.type = MessageType::kSnapStatus;
  m.from = id;
  m.reject = !success;
  (void)StepLocal(std::move(m));
}

bool RawNode::HasReady() const {
  if (ready_outstanding_) return false;
  const Raft& r = *raft_;
  if (r.GetSoftState() != prev_soft_state_) return true;
  const HardState hs = r.GetHardState();
  if (!hs.IsEmpty() && hs != prev_hard_state_) return true;
  const RaftLog& log = r.raft_log();
  if (log.HasPendingSnapshot()) return true;
  if (!r.msgs_view().empty() || !log.UnstableEntries().empty() ||
      log.HasNextCommittedEntries() || !r.read_states_view().empty()) {
    return true;
  }
  return false;
}

Ready RawNode::GetReady() {
  RAFT_CHECK(!ready_outstanding_, "GetReady called before Advance");
  Raft& r = *raft_;
  Ready rd;
  const SoftState ss = r.GetSoftState();
  if (ss != prev_soft_state_) {
    rd.soft_state = ss;
    prev_soft_state_ = ss;
  }
  const HardState hs = r.GetHardState();
  if (hs != prev_hard_state_) {
    rd.term_or_vote_changed =
        hs.term != prev_hard_state_.term || hs.vote != prev_hard_state_.vote;
    rd.must_sync = rd.term_or_vote_changed;
    rd.hard_state = hs;
    prev_hard_state_ = hs;
  }
  const RaftLog& log = r.raft_log();
  rd.entries = log.UnstableEntries();
  if (log.HasPendingSnapshot()) {
    rd.snapshot = *log.PendingSnapshot();
  } else {
    // Committed entries wait until a pending snapshot is installed.
    rd.committed_entries = log.NextCommittedEntries();
  }
  rd.messages = std::move(r.msgs());
  r.msgs().clear();
  rd.read_states = std::move(r.read_states());
  r.read_states().clear();
  rd.must_sync = rd.must_sync || !rd.entries.empty() || !rd.snapshot.IsEmpty();
  record_ = ReadyRecord{};
  if (!rd.entries.empty()) {
    record_.last_entry_index = rd.entries.back().index;
    record_.last_entry_term = rd.entries.back().term;
  }
  record_.snapshot_index = rd.snapshot.metadata.index;
  if (!rd.committed_entries.empty()) {
    record_.last_committed_index = rd.committed_entries.back().index;
    for (const Entry& e : rd.committed_entries) {
      record_.committed_bytes += e.PayloadSize();
    }
  }
  ready_outstanding_ = true;
  return rd;
}

void RawNode::Advance(const Ready& rd) {
  (void)rd;  // see the header: only the record taken by GetReady is used
  RAFT_CHECK(ready_outstanding_, "Advance without an outstanding Ready");
  ready_outstanding_ = false;
  const ReadyRecord r = record_;
  raft_->OnPersisted(r.last_entry_index, r.last_entry_term, r.snapshot_index);
  uint64_t applied = raft_->raft_log().applied();
  applied = std::max(applied, r.snapshot_index);
  applied = std::max(applied, r.last_committed_index);
  raft_->OnApplied(applied, r.committed_bytes);
  MaybeCheckInvariants();
}

NodeStatus RawNode::GetStatus() const {
  NodeStatus st;
  st.id = raft_->id();
  st.hard_state = raft_->GetHardState();
  st.soft_state = raft_->GetSoftState();
  st.applied = raft_->raft_log().applied();
  st.lead_transferee = raft_->lead_transferee();
  st.config = raft_->tracker().config;
  if (raft_->state() == StateType::kLeader) {
    st.progress = raft_->tracker().progress;
  }
  return st;
}

absl::StatusOr<BootstrapImage> MakeBootstrapImage(
    std::vector<uint64_t> voters,
    const std::map<uint64_t, std::string>& contexts) {
  if (voters.empty()) return absl::InvalidArgumentError("no voters");
  std::sort(voters.begin(), voters.end());
  voters.erase(std::unique(voters.begin(), voters.end()), voters.end());
  BootstrapImage image;
  image.conf_state.voters = voters;
  for (size_t i = 0; i < voters.size(); ++i) {
    ConfChange cc;
    cc.changes.push_back({ConfChangeType::kAddNode, voters[i]});
    if (auto it = contexts.find(voters[i]); it != contexts.end()) {
      cc.context = it->second;
    }
    Entry e;
    e.term = 1;
    e.index = i + 1;
    e.type = EntryType::kConfChange;
    e.data = EncodeConfChange(cc);
    image.entries.push_back(std::move(e));
  }
  image.hard_state = HardState{1, kNone, image.entries.size()};
  return image;
}

absl::Status BootstrapStorage(MemoryStorage* storage,
                              const std::vector<uint64_t>& voters) {
  if (storage->LastIndex() != 0 || !storage->hard_state().IsEmpty()) {
    return absl::FailedPreconditionError("storage is not empty");
  }
  absl::StatusOr<BootstrapImage> image = MakeBootstrapImage(voters);
  if (!image.ok()) return image.status();
  absl::Status s = storage->Append(image->entries);
  if (!s.ok()) return s;
  storage->SetConfState(image->conf_state);
  storage->SetHardState(image->hard_state);
  return absl::OkStatus();
}

}  // namespace lockd::raft
