#include "raft/node/node.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"
#include "lockd/util/thread_name.h"

namespace lockd::raft {

// The same image BootstrapStorage gives MemoryStorage.
absl::Status BootstrapLog(DiskStorage* storage, std::vector<uint64_t> voters,
                          const std::map<uint64_t, std::string>& contexts) {
  absl::StatusOr<BootstrapImage> image =
      MakeBootstrapImage(std::move(voters), contexts);
  if (!image.ok()) return image.status();
  if (absl::Status s = storage->SetInitialConfState(image->conf_state);
      !s.ok()) {
    return s;
  }
  return storage->Save(image->hard_state, image->entries, Snapshot(),
                       /*sync=*/true);
}

absl::StatusOr<std::unique_ptr<RaftNode>> RaftNode::Create(
    const NodeOptions& options, DiskStorage* storage, Transport* transport,
    StateMachine* state_machine) {
  HardState hs;
  ConfState cs;
  if (absl::Status s = storage->InitialState(&hs, &cs); !s.ok()) return s;
  if (storage->LastIndex() == 0 && hs.IsEmpty() && !options.join_existing) {
    if (options.bootstrap_voters.empty()) {
      return absl::FailedPreconditionError(
          "the raft log is empty and there is no initial cluster to "
          "bootstrap: start a new cluster with --initial-cluster-state=new, "
          "or add this member to an existing cluster first");
    }
    if (absl::Status s = BootstrapLog(storage, options.bootstrap_voters,
                                      options.bootstrap_contexts);
        !s.ok()) {
      return s;
    }
  }
  auto node = std::unique_ptr<RaftNode>(
      new RaftNode(options, storage, transport, state_machine));
  // The state machine may be ahead of the log's commit index (a crash
  // between the two steps of a snapshot install, see node.h): the core
  // starts from the commit index and the state machine skips what it has.
  // It must never be behind the log's start: the entries it would need are
  // gone.
  const uint64_t sm_applied = state_machine->AppliedIndex();
  if (sm_applied + 1 < storage->FirstIndex()) {
    return absl::DataLossError(absl::StrCat(
        "the key-value store is at index ", sm_applied,
        " but the raft log starts after ", storage->FirstIndex() - 1,
        ": the store lost data the log no longer holds; remove this "
        "member's data directory and add it to the cluster again"));
  }
  if (absl::Status s = storage->InitialState(&hs, &cs); !s.ok()) return s;
  Config config;
  config.id = options.id;
  config.election_tick = options.election_tick;
  config.heartbeat_tick = options.heartbeat_tick;
  config.storage = storage;
  config.applied = std::min(sm_applied, hs.commit);
  // The core asserts applied >= its log's start; a store exactly at the
  // log's start is fine.
  config.applied = std::max(config.applied, storage->FirstIndex() - 1);
  config.max_size_per_msg_bytes = options.max_size_per_msg_bytes;
  config.max_uncommitted_entries_bytes = options.max_uncommitted_bytes;
  config.max_inflight_msgs = options.max_inflight_msgs;
  config.check_quorum = options.check_quorum;
  config.pre_vote = options.pre_vote;
  config.seed = options.seed;
  config.check_invariants = false;
  absl::StatusOr<std::unique_ptr<RawNode>> raw = RawNode::Create(config);
  if (!raw.ok()) return raw.status();
  node->raw_ = *std::move(raw);
  node->applied_ = config.applied;
  absl::StatusOr<Snapshot> snap = storage->GetSnapshot();
  if (!snap.ok()) return snap.status();
  node->snapshot_index_ = snap->metadata.index;
  {
    absl::MutexLock lock(&node->mu_);
    node->applied_for_waiters_ = config.applied;
  }
  return node;
}

RaftNode::RaftNode(const NodeOptions& options, DiskStorage* storage,
                   Transport* transport, StateMachine* state_machine)
    : options_(options),
      storage_(storage),
      transport_(transport),
      state_machine_(state_machine) {}

RaftNode::~RaftNode() { Stop(); }

void RaftNode::Start() {
  absl::MutexLock lock(&mu_);
  if (running_ || stop_) return;
  running_ = true;
  leaderless_since_ = MonotonicNow();
  thread_ = std::thread([this] { Run(); });
  const absl::Duration interval = options_.tick_interval;
  ticker_.Start("raft-tick", MonotonicNow() + interval,
                [this, interval, next = MonotonicNow() + interval]() mutable {
                  {
                    absl::MutexLock lock(&mu_);
                    tick_due_ = true;
                  }
                  const absl::Time now = MonotonicNow();
                  next += interval;
                  // After a stall, don't replay missed ticks in a burst.
                  if (next < now) next = now + interval;
                  return next;
                });
}

void RaftNode::Stop() {
  ticker_.Stop();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // Whatever was still queued never reached the core.
  std::deque<Input> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(inbox_);
  }
  DiscardSnapshots(left);
  for (Input& in : left) {
    if (in.done)
      in.done(absl::UnavailableError("etcdserver: server stopped"), 0);
  }
  // The loop has ended: nothing will be applied any more.
  auto waiters = std::move(applied_waiters_);
  applied_waiters_.clear();
  for (auto& [index, done] : waiters) {
    done(absl::UnavailableError("etcdserver: server stopped"));
  }
}

void RaftNode::DiscardSnapshots(const std::deque<Input>& inputs) {
  for (const Input& in : inputs) {
    if (in.kind == Input::kMessage && in.message.type == MessageType::kSnap) {
      state_machine_->DiscardSnapshot(in.message.snapshot.data);
    }
  }
}

absl::Status RaftNode::Enqueue(Input input) {
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::UnavailableError("etcdserver: server stopped");
  if (inbox_.size() >= options_.inbox_max) {
    return absl::ResourceExhaustedError("etcdserver: too many requests");
  }
  inbox_.push_back(std::move(input));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RaftNode::Call(Input input, absl::Time deadline) {
  struct Result {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::Status status ABSL_GUARDED_BY(mu);
    uint64_t value ABSL_GUARDED_BY(mu) = 0;
  };
  auto result = std::make_shared<Result>();
  input.done = [result](absl::Status s, uint64_t v) {
    absl::MutexLock lock(&result->mu);
    result->done = true;
    result->status = std::move(s);
    result->value = v;
  };
  if (absl::Status s = Enqueue(std::move(input)); !s.ok()) return s;
  absl::MutexLock lock(&result->mu);
  if (!AwaitUntil(result->mu, absl::Condition(&result->done), deadline)) {
    return absl::DeadlineExceededError("etcdserver: request timed out");
  }
  if (!result->status.ok()) return result->status;
  return result->value;
}

absl::Status RaftNode::Propose(std::string data, absl::Time deadline,
                               uint64_t term) {
  Input in;
  in.kind = Input::kPropose;
  in.data = std::move(data);
  in.term = term;
  return Call(std::move(in), deadline).status();
}

void RaftNode::ProposeAsync(std::string data,
                            std::function<void(absl::Status)> done,
                            uint64_t term) {
  Input in;
  in.kind = Input::kPropose;
  in.data = std::move(data);
  in.term = term;
  auto shared =
      std::make_shared<std::function<void(absl::Status)>>(std::move(done));
  in.done = [shared](absl::Status s, uint64_t) { (*shared)(std::move(s)); };
  if (absl::Status s = Enqueue(std::move(in)); !s.ok()) (*shared)(s);
}

absl::Status RaftNode::ProposeConfChange(const ConfChange& cc,
                                         absl::Time deadline, uint64_t term) {
  Input in;
  in.kind = Input::kConfChange;
  in.conf_change = cc;
  in.term = term;
  return Call(std::move(in), deadline).status();
}

absl::StatusOr<NodeStatus> RaftNode::Status(absl::Time deadline) {
  Input in;
  in.kind = Input::kStatus;
  auto out = std::make_shared<NodeStatus>();
  in.status_out = out;
  if (absl::Status s = Call(std::move(in), deadline).status(); !s.ok()) {
    return s;
  }
  return *out;
}

absl::Status RaftNode::ReadBarrier(absl::Time deadline) {
  Input in;
  in.kind = Input::kRead;
  absl::StatusOr<uint64_t> index = Call(std::move(in), deadline);
  if (!index.ok()) return index.status();
  return WaitApplied(*index, deadline);
}

void RaftNode::ReadBarrierAsync(std::function<void(absl::Status)> done) {
  Input in;
  in.kind = Input::kRead;
  auto shared =
      std::make_shared<std::function<void(absl::Status)>>(std::move(done));
  in.done = [this, shared](absl::Status s, uint64_t index) {
    // On the node thread.
    if (!s.ok()) {
      (*shared)(std::move(s));
    } else if (applied_.load() >= index) {
      (*shared)(absl::OkStatus());
    } else {
      applied_waiters_.emplace(index, std::move(*shared));
    }
  };
  if (absl::Status s = Enqueue(std::move(in)); !s.ok()) (*shared)(s);
}

absl::Status RaftNode::RemovedError() {
  return absl::UnavailableError(
      "etcdserver: this member was removed from the cluster; try another "
      "member");
}

void RaftNode::CheckRemoved() {
  if (removed_) return;
  if (raw_->IsMember()) {
    was_member_ = true;
    return;
  }
  // A joining member replays configurations from before its own addition:
  // only one that was a member can have been removed.
  if (!was_member_) return;
  removed_ = true;
  Logf(LogLevel::kInfo, "raft",
       "member %x applied its own removal: pending and new reads fail",
       options_.id);
  // The leader no longer replicates to this member: a read index past what
  // it has applied would never be reached.
  FailPending(RemovedError());
  auto waiters = std::move(applied_waiters_);
  applied_waiters_.clear();
  for (auto& [index, done] : waiters) done(RemovedError());
  absl::MutexLock lock(&mu_);
  removed_for_waiters_ = true;
}

void RaftNode::FireAppliedWaiters(uint64_t applied) {
  while (!applied_waiters_.empty() &&
         applied_waiters_.begin()->first <= applied) {
    std::function<void(absl::Status)> done =
        std::move(applied_waiters_.begin()->second);
    applied_waiters_.erase(applied_waiters_.begin());
    done(absl::OkStatus());
  }
}

absl::Status RaftNode::WaitApplied(uint64_t index, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto reached = [this, index]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return applied_for_waiters_ >= index || stop_ || removed_for_waiters_;
  };
  if (!AwaitUntil(mu_, absl::Condition(&reached), deadline)) {
    return absl::DeadlineExceededError(
        "etcdserver: request timed out, waiting for the applied index took "
        "too long");
  }
  if (applied_for_waiters_ < index) {
    return removed_for_waiters_
               ? RemovedError()
               : absl::UnavailableError("etcdserver: server stopped");
  }
  return absl::OkStatus();
}

absl::Status RaftNode::WaitForLeader(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto known = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return leader_for_waiters_ != 0 || stop_;
  };
  if (leader_for_waiters_ == 0) {
    const absl::Duration wait_max =
        options_.leaderless_wait_max > absl::ZeroDuration()
            ? options_.leaderless_wait_max
            : 3 * options_.election_tick * options_.tick_interval;
    deadline = std::min(deadline, leaderless_since_ + wait_max);
  }
  AwaitUntil(mu_, absl::Condition(&known), deadline);
  if (leader_for_waiters_ == 0) {
    return absl::UnavailableError("etcdserver: no leader");
  }
  return absl::OkStatus();
}

absl::Duration RaftNode::LeaderlessFor() {
  absl::MutexLock lock(&mu_);
  if (leader_for_waiters_ != 0) return absl::ZeroDuration();
  return MonotonicNow() - leaderless_since_;
}

absl::Status RaftNode::WaitForLeaderChange(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  const uint64_t was = leader_for_waiters_;
  auto changed = [this, was]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return leader_for_waiters_ != was || stop_;
  };
  if (!AwaitUntil(mu_, absl::Condition(&changed), deadline)) {
    return absl::DeadlineExceededError("leader unchanged");
  }
  return absl::OkStatus();
}

absl::Status RaftNode::TransferLeadership(uint64_t transferee,
                                          absl::Time deadline) {
  Input in;
  in.kind = Input::kTransfer;
  in.target = transferee;
  return Call(std::move(in), deadline).status();
}

absl::Status RaftNode::CheckPeer(uint64_t from) { return absl::OkStatus(); }

void RaftNode::Deliver(std::vector<Message> messages) {
  std::deque<Input> dropped;
  {
    absl::MutexLock lock(&mu_);
    for (Message& m : messages) {
      Input in;
      in.kind = Input::kMessage;
      in.message = std::move(m);
      // Over the bound, drop: raft retransmits what matters.
      if (stop_ || inbox_.size() >= options_.inbox_max) {
        dropped.push_back(std::move(in));
      } else {
        inbox_.push_back(std::move(in));
      }
    }
  }
  DiscardSnapshots(dropped);
}

void RaftNode::HandleInputs(std::deque<Input>& inputs) {
  for (size_t i = 0; i < inputs.size();) {
    if (inputs[i].kind != Input::kPropose) {
      HandleInput(inputs[i++]);
      continue;
    }
    // Consecutive proposals, up to an append's worth of bytes, are proposed
    // together (in the order they came).
    std::vector<Input*> run;
    uint64_t bytes = 0;
    while (i < inputs.size() && inputs[i].kind == Input::kPropose &&
           (run.empty() ||
            bytes + inputs[i].data.size() <= options_.max_size_per_msg_bytes)) {
      bytes += inputs[i].data.size();
      run.push_back(&inputs[i++]);
    }
    ProposeRun(run);
  }
}

void RaftNode::HandleInput(Input& in) {
  switch (in.kind) {
    case Input::kMessage: {
      if (in.message.type == MessageType::kSnap) {
        stepped_snapshots_.push_back(in.message.snapshot.data);
      }
      absl::Status s = raw_->Step(std::move(in.message));
      if (!s.ok() && LogEnabled(LogLevel::kDebug)) {
        Logf(LogLevel::kDebug, "raft", "dropped message: %s",
             std::string(s.message()));
      }
      break;
    }
    case Input::kPropose:
      // HandleInputs sends runs of proposals to ProposeRun itself.
      ProposeRun({&in});
      break;
    case Input::kRead: {
      if (removed_) {
        in.done(RemovedError(), 0);
        break;
      }
      // Reads that arrived together share one ReadIndex round (one
      // heartbeat to a quorum): each arrived before it was issued, so the
      // index it confirms covers every write committed before any of them.
      if (!read_batch_ctx_.empty()) {
        reads_[read_batch_ctx_].push_back(std::move(in.done));
        break;
      }
      std::string ctx = absl::StrCat(options_.id, ":", next_read_ctx_++);
      absl::Status s = raw_->ReadIndex(ctx);
      if (!s.ok()) {
        in.done(s, 0);
      } else {
        reads_[ctx].push_back(std::move(in.done));
        read_batch_ctx_ = ctx;
      }
      break;
    }
    case Input::kTransfer:
      in.done(raw_->TransferLeadership(in.target), 0);
      break;
    case Input::kConfChange:
      if (std::optional<absl::Status> ended = TermEnded(in)) {
        in.done(*ended, 0);
        break;
      }
      in.done(raw_->ProposeConfChange(in.conf_change), 0);
      break;
    case Input::kStatus:
      *in.status_out = raw_->GetStatus();
      in.done(absl::OkStatus(), 0);
      break;
  }
}

void RaftNode::ProposeRun(absl::Span<Input* const> run) {
  std::vector<std::string> data;
  std::vector<Input*> proposed;
  data.reserve(run.size());
  proposed.reserve(run.size());
  for (Input* in : run) {
    if (std::optional<absl::Status> ended = TermEnded(*in)) {
      in->done(*ended, 0);
      continue;
    }
    data.push_back(std::move(in->data));
    proposed.push_back(in);
  }
  if (data.empty()) return;
  // One proposal of many entries: the leader appends them together and
  // sends each follower one append carrying all of them (and gets one
  // answer), where a proposal each meant an append and an answer each.
  const absl::Status s = raw_->ProposeBatch(std::move(data));
  for (Input* in : proposed) in->done(s, 0);
}

std::optional<absl::Status> RaftNode::TermEnded(const Input& in) const {
  const uint64_t now = raw_->raft().term();
  if (in.term == 0 || in.term == now) return std::nullopt;
  return absl::UnavailableError(absl::StrCat("not proposed: term ", in.term,
                                             " has ended (now ", now, ")"));
}

void RaftNode::FailPending(const absl::Status& status) {
  for (auto& [ctx, dones] : reads_) {
    for (auto& done : dones) done(status, 0);
  }
  reads_.clear();
  read_batch_ctx_.clear();
}

bool RaftNode::HandleReady(Ready rd) {
  // The term first: whoever sees the new leader (leader(), WaitForLeader)
  // then sees its term too, and names it in a proposal.
  if (!rd.hard_state.IsEmpty()) {
    term_ = rd.hard_state.term;
    commit_ = rd.hard_state.commit;
  }
  if (rd.soft_state.has_value()) {
    uint64_t old = leader_.exchange(rd.soft_state->lead);
    if (old != rd.soft_state->lead && rd.soft_state->lead != 0 &&
        options_.leader_changes != nullptr) {
      options_.leader_changes->Inc();
    }
    if (old != rd.soft_state->lead) {
      Logf(LogLevel::kInfo, "raft", "member %x: leader is now %x (%s)",
           options_.id, rd.soft_state->lead,
           StateTypeName(rd.soft_state->raft_state));
      // Reads the old leader was confirming may never be answered.
      FailPending(absl::UnavailableError("etcdserver: leader changed"));
      absl::MutexLock lock(&mu_);
      if (leader_for_waiters_ != 0 && rd.soft_state->lead == 0) {
        leaderless_since_ = MonotonicNow();
      }
      leader_for_waiters_ = rd.soft_state->lead;
    }
  }
  std::vector<Message> early, late;
  for (Message& m : rd.messages) {
    (MaySendBeforePersisting(rd, m) ? early : late).push_back(m);
  }
  if (!early.empty()) transport_->Send(std::move(early));
  // The state machine takes a snapshot's image before the log records the
  // snapshot (see node.h for why this order).
  Snapshot snapshot = rd.snapshot;
  if (!snapshot.IsEmpty()) {
    if (!InstallSnapshot(snapshot)) return false;
    // The image's local descriptor means nothing after this process; the
    // log keeps the metadata only.
    snapshot.data.clear();
  }
  absl::Status s =
      storage_->Save(rd.hard_state, rd.entries, snapshot, rd.must_sync);
  if (!s.ok()) {
    Logf(LogLevel::kError, "raft", "cannot persist the raft log: %s",
         std::string(s.message()));
    return false;
  }
  if (!snapshot.IsEmpty()) {
    snapshot_index_ = snapshot.metadata.index;
    snapshots_installed_.fetch_add(1);
    if (snapshot.metadata.index > applied_.load()) {
      applied_ = snapshot.metadata.index;
      {
        absl::MutexLock lock(&mu_);
        applied_for_waiters_ = snapshot.metadata.index;
      }
      FireAppliedWaiters(snapshot.metadata.index);
    }
    Logf(LogLevel::kInfo, "raft",
         "member %x installed a snapshot at index %d (term %d); the "
         "key-value store is at index %d",
         options_.id, snapshot.metadata.index, snapshot.metadata.term,
         state_machine_->AppliedIndex());
  }
  if (!late.empty()) transport_->Send(std::move(late));
  // Membership changes only with a snapshot or a conf change.
  bool config_changed = !snapshot.IsEmpty();
  if (!rd.committed_entries.empty()) {
    for (Entry& e : rd.committed_entries) {
      if (e.type != EntryType::kConfChange) continue;
      config_changed = true;
      absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
      if (!cc.ok()) {
        Logf(LogLevel::kError, "raft", "undecodable conf change at %d: %s",
             e.index, std::string(cc.status().message()));
        return false;
      }
      absl::StatusOr<ConfState> cs = raw_->ApplyConfChange(*cc);
      if (!cs.ok()) {
        Logf(LogLevel::kWarning, "raft", "conf change at %d rejected: %s",
             e.index, std::string(cs.status().message()));
        // Every member rejects it alike; the state machine sees no change.
        e.type = EntryType::kNormal;
        e.data.clear();
      }
    }
    const absl::Time apply_start = MonotonicNow();
    if (absl::Status as = state_machine_->Apply(rd.committed_entries);
        !as.ok()) {
      Logf(LogLevel::kError, "raft", "cannot apply committed entries: %s",
           std::string(as.message()));
      return false;
    }
    if (options_.slow_applies != nullptr &&
        MonotonicNow() - apply_start > absl::Milliseconds(100)) {
      options_.slow_applies->Inc();
    }
    uint64_t applied = rd.committed_entries.back().index;
    applied_ = applied;
    {
      absl::MutexLock lock(&mu_);
      applied_for_waiters_ = applied;
    }
    FireAppliedWaiters(applied);
  }
  if (config_changed) CheckRemoved();
  for (const ReadState& rs : rd.read_states) {
    auto it = reads_.find(rs.request_ctx);
    if (it == reads_.end()) continue;
    for (auto& done : it->second) done(absl::OkStatus(), rs.index);
    reads_.erase(it);
  }
  raw_->Advance(rd);
  return true;
}

bool RaftNode::InstallSnapshot(const Snapshot& snapshot) {
  absl::Status s = state_machine_->Restore(snapshot);
  if (!s.ok()) {
    Logf(LogLevel::kError, "raft",
         "cannot install the snapshot at index %d: %s", snapshot.metadata.index,
         std::string(s.message()));
    return false;
  }
  return true;
}

void RaftNode::MaybeCompactLog() {
  const uint64_t applied = applied_.load();
  if (options_.snapshot_count == 0 ||
      applied <= snapshot_index_ + options_.snapshot_count) {
    return;
  }
  // The log may forget only what the state machine holds durably.
  if (absl::Status s = state_machine_->Sync(); !s.ok()) {
    Logf(LogLevel::kWarning, "raft",
         "log compaction postponed: cannot sync the key-value store: %s",
         std::string(s.message()));
    return;
  }
  const ConfState cs = raw_->raft().tracker().GetConfState();
  absl::Status s = storage_->CreateSnapshot(applied, cs, std::string(),
                                            options_.snapshot_catchup_entries);
  if (!s.ok()) {
    Logf(LogLevel::kWarning, "raft", "log compaction at %d failed: %s", applied,
         std::string(s.message()));
    return;
  }
  snapshot_index_ = applied;
  log_compactions_.fetch_add(1);
  Logf(LogLevel::kInfo, "raft",
       "member %x took a raft snapshot at index %d; the log now starts at %d",
       options_.id, applied, storage_->FirstIndex());
}

void RaftNode::Run() {
  SetThreadName("raft-node");
  was_member_ = raw_->IsMember();
  // A member that is the only voter need not wait out an election timeout
  // before serving.
  // (It campaigns once the committed configuration is applied; the core
  // refuses to campaign over unapplied configuration changes.)
  NodeStatus status = raw_->GetStatus();
  bool campaign_now = status.config.voters.incoming.size() == 1 &&
                      status.config.voters.incoming.count(options_.id) == 1 &&
                      status.config.voters.outgoing.empty();
  // Ticks come from ticker_, which waits on the monotonic clock itself: a
  // wall-clock step, forward or backward, neither cuts an election timeout
  // short nor holds back an idle leader's heartbeats.
  while (true) {
    std::deque<Input> inputs;
    bool tick;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !inbox_.empty() || tick_due_;
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) break;
      inputs.swap(inbox_);
      tick = tick_due_;
      tick_due_ = false;
    }
    HandleInputs(inputs);
    read_batch_ctx_.clear();
    for (uint64_t id : transport_->TakeUnreachable()) {
      raw_->ReportUnreachable(id);
    }
    for (const auto& [id, ok] : transport_->TakeSnapshotReports()) {
      raw_->ReportSnapshot(id, ok);
    }
    if (tick) raw_->Tick();
    while (raw_->HasReady()) {
      if (!HandleReady(raw_->GetReady())) {
        // Going on could acknowledge what was never stored: stop the
        // process, as etcd does, and let the operator see why.
        Logf(LogLevel::kError, "raft",
             "member %x cannot continue: its storage failed (see above); "
             "check the disk of --data-dir, then restart the member",
             options_.id);
        std::abort();
      }
    }
    // Images the core did not take (or that were installed: then the
    // store moved them away) are freed now.
    for (const std::string& data : stepped_snapshots_) {
      state_machine_->DiscardSnapshot(data);
    }
    stepped_snapshots_.clear();
    MaybeCompactLog();
    if (campaign_now &&
        applied_.load() >= raw_->GetStatus().hard_state.commit) {
      campaign_now = false;
      (void)raw_->Campaign();
      while (raw_->HasReady()) {
        if (!HandleReady(raw_->GetReady())) std::abort();
      }
    }
  }
  FailPending(absl::UnavailableError("etcdserver: server stopped"));
}

}  // namespace lockd::raft
