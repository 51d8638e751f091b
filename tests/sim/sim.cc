#include "tests/sim/sim.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "raft/core/raft.h"
#include "raft/core/raw_node.h"
#include "raft/core/storage.h"
#include "raft/core/types.h"

namespace lockd::raft::sim {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdULL;
  return h ^ (h >> 33);
}

uint64_t HashBytes(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t EntryHash(uint64_t prev, const Entry& e) {
  uint64_t h = Mix(prev, e.index);
  h = Mix(h, e.term);
  h = Mix(h, static_cast<uint64_t>(e.type));
  return Mix(h, HashBytes(e.data));
}

// Caps that keep a run bounded.
constexpr int kMaxNodeIds = 10;
constexpr size_t kMaxConfigSize = 7;

class Sim {
 public:
  explicit Sim(const SimOptions& o) : opts_(o), rng_(o.seed) {}

  SimResult Run();

 private:
  struct Node {
    uint64_t id = 0;
    std::unique_ptr<MemoryStorage> storage;  // survives crashes
    // chain[i] = hash of the persisted log prefix up to chain_base + i.
    std::vector<uint64_t> chain;
    uint64_t chain_base = 0;
    std::unique_ptr<RawNode> raw;  // null while crashed
    // Volatile application state.
    uint64_t applied = 0;
    uint64_t app_hash = 0;
    ConfState conf;
    double tick_rate = 1.0;
    int64_t restart_at = -1;
    bool marker_applied = false;
  };
  struct InFlight {
    int64_t at;
    uint64_t seq;
    Message m;
  };
  struct Applied {
    uint64_t term;
    uint64_t app_hash;
  };

  // --- randomness
  bool Chance(double p) {
    return static_cast<double>(rng_.Next() >> 11) * 0x1.0p-53 < p;
  }
  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : rng_.Uniform(n); }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Uniform(v.size())];
  }

  template <typename... Args>
  void Log(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
    if (!opts_.verbose) return;
    std::printf("[%6lld] %s\n", static_cast<long long>(now_),
                absl::StrFormat(fmt, args...).c_str());
  }
  void Fail(const std::string& msg) {
    if (!result_.ok) return;
    result_.ok = false;
    result_.error = absl::StrCat("step ", now_, ": ", msg);
    if (opts_.verbose) std::printf("FAILURE: %s\n", result_.error.c_str());
  }

  // --- cluster management
  Node& CreateNode(uint64_t id, const std::vector<uint64_t>& bootstrap);
  void StartNode(Node& n);
  void Crash(Node& n);
  std::vector<Node*> LiveNodes();
  std::vector<Node*> Leaders();
  Node* FindNode(uint64_t id) {
    auto it = nodes_.find(id);
    return it == nodes_.end() ? nullptr : &it->second;
  }

  // --- storage with log-matching bookkeeping
  void PersistEntries(Node& n, const std::vector<Entry>& ents);
  void PersistSnapshot(Node& n, const Snapshot& s);
  void RecordChain(uint64_t index, uint64_t term, uint64_t hash);

  // --- network
  void Send(const Message& m);
  void DeliverDue();

  // --- the node loop
  void ProcessReady(Node& n);
  void ApplyEntry(Node& n, const Entry& e);
  void InstallSnapshot(Node& n, const Snapshot& s);

  // --- client and operator actions
  void RandomClientOps();
  void RandomFaults();
  void RandomMembershipChange();
  void MaybeSnapshot(Node& n);

  // --- checks
  void CheckSafety();
  void CheckLeaderCompleteness(const Node& n);

  void Step(bool chaos);
  void Heal();
  bool LivenessPhase();
  std::string DumpState();

  SimOptions opts_;
  Rng rng_;
  SimResult result_;
  int64_t now_ = 0;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Node> nodes_;
  std::vector<InFlight> network_;
  uint64_t msg_seq_ = 0;
  std::set<std::pair<uint64_t, uint64_t>> blocked_;
  int64_t heal_partitions_at_ = -1;

  // Per-seed knobs.
  double drop_p_ = 0, dup_p_ = 0, crash_p_ = 0;
  int max_delay_ = 0;
  Config base_config_;

  // Ground truth observed so far.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> chain_by_entry_;
  std::vector<Applied> applied_;  // applied_[i-1] for index i
  uint64_t max_term_seen_ = 0;
  // (term bound, highest index first applied while max_term_seen_ was it).
  std::vector<std::pair<uint64_t, uint64_t>> commit_bounds_;
  std::map<uint64_t, uint64_t> leader_by_term_;
  std::map<std::string, uint64_t> pending_reads_;  // ctx -> required index
  uint64_t prop_seq_ = 0;
  uint64_t read_seq_ = 0;
  std::string marker_;
};

Sim::Node& Sim::CreateNode(uint64_t id,
                           const std::vector<uint64_t>& bootstrap) {
  Node& n = nodes_[id];
  n.id = id;
  n.storage = std::make_unique<MemoryStorage>();
  n.chain = {0};
  n.chain_base = 0;
  if (!bootstrap.empty()) {
    absl::Status s = BootstrapStorage(n.storage.get(), bootstrap);
    if (!s.ok()) Fail(absl::StrCat("bootstrap: ", s.ToString()));
    absl::StatusOr<std::vector<Entry>> ents =
        n.storage->Entries(1, n.storage->LastIndex() + 1, kNoLimit);
    for (const Entry& e : *ents) {
      n.chain.push_back(EntryHash(n.chain.back(), e));
      RecordChain(e.index, e.term, n.chain.back());
    }
  }
  n.tick_rate = 0.7 + 0.3 * static_cast<double>(Uniform(1000)) / 1000.0;
  StartNode(n);
  return n;
}

void Sim::StartNode(Node& n) {
  Config c = base_config_;
  c.id = n.id;
  c.storage = n.storage.get();
  c.seed = rng_.Next();
  absl::StatusOr<Snapshot> snap = n.storage->GetSnapshot();
  HardState hs;
  ConfState cs;
  (void)n.storage->InitialState(&hs, &cs);
  n.applied = 0;
  n.app_hash = 0;
  n.conf = cs;
  if (snap.ok() && !snap->IsEmpty()) {
    unsigned long long idx = 0, h = 0;
    std::sscanf(snap->data.c_str(), "%llu:%llu", &idx, &h);
    n.applied = idx;
    n.app_hash = h;
  }
  c.applied = n.applied;
  absl::StatusOr<std::unique_ptr<RawNode>> raw = RawNode::Create(c);
  if (!raw.ok()) {
    Fail(absl::StrCat("create node ", n.id, ": ", raw.status().ToString()));
    return;
  }
  n.raw = *std::move(raw);
  n.restart_at = -1;
  Log("node %d started (applied=%d, last=%d, term=%d)", n.id, n.applied,
      n.storage->LastIndex(), hs.term);
}

void Sim::Crash(Node& n) {
  if (!n.raw) return;
  n.raw.reset();
  ++result_.crashes;
  n.restart_at = now_ + 5 + static_cast<int64_t>(Uniform(80));
  Log("node %d crashed (restart at %d)", n.id, n.restart_at);
}

std::vector<Sim::Node*> Sim::LiveNodes() {
  std::vector<Node*> out;
  for (auto& [id, n] : nodes_) {
    if (n.raw) out.push_back(&n);
  }
  return out;
}

std::vector<Sim::Node*> Sim::Leaders() {
  std::vector<Node*> out;
  for (Node* n : LiveNodes()) {
    if (n->raw->raft().state() == StateType::kLeader) out.push_back(n);
  }
  return out;
}

void Sim::RecordChain(uint64_t index, uint64_t term, uint64_t hash) {
  auto [it, inserted] =
      chain_by_entry_.emplace(std::make_pair(index, term), hash);
  if (!inserted && it->second != hash) {
    Fail(absl::StrFormat(
        "log matching violated: two logs hold entry %d/%d with different "
        "prefixes",
        term, index));
  }
}

void Sim::PersistEntries(Node& n, const std::vector<Entry>& ents) {
  if (ents.empty()) return;
  absl::Status s = n.storage->Append(ents);
  if (!s.ok()) {
    Fail(absl::StrCat("append: ", s.ToString()));
    return;
  }
  for (const Entry& e : ents) {
    if (e.index <= n.chain_base) continue;  // compacted already
    const uint64_t pos = e.index - n.chain_base;
    if (pos > n.chain.size()) {
      Fail(absl::StrCat("node ", n.id, " persisted a gap at ", e.index));
      return;
    }
    n.chain.resize(pos);
    n.chain.push_back(EntryHash(n.chain.back(), e));
    RecordChain(e.index, e.term, n.chain.back());
  }
}

void Sim::PersistSnapshot(Node& n, const Snapshot& s) {
  absl::Status st = n.storage->ApplySnapshot(s);
  if (!st.ok()) {
    Fail(absl::StrCat("apply snapshot: ", st.ToString()));
    return;
  }
  auto it = chain_by_entry_.find({s.metadata.index, s.metadata.term});
  if (it == chain_by_entry_.end()) {
    Fail(absl::StrFormat("snapshot at %d/%d of an entry never persisted",
                         s.metadata.term, s.metadata.index));
    return;
  }
  n.chain = {it->second};
  n.chain_base = s.metadata.index;
}

void Sim::Send(const Message& m) {
  Node* to = FindNode(m.to);
  Node* from = FindNode(m.from);
  bool drop =
      to == nullptr || blocked_.count({m.from, m.to}) > 0 || Chance(drop_p_);
  if (drop) {
    if (m.type == MessageType::kSnap && from != nullptr && from->raw) {
      from->raw->ReportSnapshot(m.to, false);
    }
    if (from != nullptr && from->raw && Chance(0.3)) {
      from->raw->ReportUnreachable(m.to);
    }
    return;
  }
  const int copies = Chance(dup_p_) ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    const int64_t delay =
        Chance(0.7) ? 0 : static_cast<int64_t>(Uniform(max_delay_ + 1));
    network_.push_back(InFlight{now_ + delay, msg_seq_++, m});
  }
}

void Sim::DeliverDue() {
  std::vector<InFlight> due;
  std::vector<InFlight> later;
  for (InFlight& f : network_) {
    (f.at <= now_ ? due : later).push_back(std::move(f));
  }
  network_ = std::move(later);
  // Reorder messages due at the same time.
  for (size_t i = due.size(); i > 1; --i) {
    std::swap(due[i - 1], due[Uniform(i)]);
  }
  for (InFlight& f : due) {
    Node* to = FindNode(f.m.to);
    Node* from = FindNode(f.m.from);
    const bool snap = f.m.type == MessageType::kSnap;
    if (to == nullptr || !to->raw || blocked_.count({f.m.from, f.m.to}) > 0) {
      if (snap && from != nullptr && from->raw) {
        from->raw->ReportSnapshot(f.m.to, false);
      }
      continue;
    }
    if (snap) ++result_.snapshots_sent;
    const uint64_t dest = f.m.to, src = f.m.from;
    (void)to->raw->Step(std::move(f.m));
    if (snap && from != nullptr && from->raw) {
      from->raw->ReportSnapshot(dest, true);
    }
    (void)src;
  }
}

void Sim::ProcessReady(Node& n) {
  if (!n.raw || !n.raw->HasReady()) return;
  Ready rd = n.raw->GetReady();
  if (rd.soft_state.has_value() &&
      rd.soft_state->raft_state == StateType::kLeader) {
    ++result_.elections;
    Log("node %d became leader at term %d", n.id, n.raw->raft().term());
  }
  std::vector<bool> sent(rd.messages.size(), false);
  if (Chance(0.5)) {
    // The leader sends its appends while it persists (thesis §10.2.1).
    for (size_t i = 0; i < rd.messages.size(); ++i) {
      if (MaySendBeforePersisting(rd, rd.messages[i])) {
        Send(rd.messages[i]);
        sent[i] = true;
      }
    }
  }
  if (Chance(crash_p_)) {
    Log("node %d crashes before persisting", n.id);
    Crash(n);
    return;
  }
  // One atomic write: snapshot, entries, hard state.
  if (!rd.snapshot.IsEmpty()) PersistSnapshot(n, rd.snapshot);
  PersistEntries(n, rd.entries);
  if (!rd.hard_state.IsEmpty()) n.storage->SetHardState(rd.hard_state);
  for (size_t i = 0; i < rd.messages.size(); ++i) {
    if (!sent[i]) Send(rd.messages[i]);
  }
  if (Chance(crash_p_ / 2)) {
    Log("node %d crashes after persisting", n.id);
    Crash(n);
    return;
  }
  if (!rd.snapshot.IsEmpty()) InstallSnapshot(n, rd.snapshot);
  for (const Entry& e : rd.committed_entries) {
    ApplyEntry(n, e);
    if (!n.raw) return;
  }
  for (const ReadState& rs : rd.read_states) {
    auto it = pending_reads_.find(rs.request_ctx);
    if (it == pending_reads_.end()) {
      Fail(absl::StrCat("node ", n.id, " got unknown read ", rs.request_ctx));
      continue;
    }
    // The network duplicates messages, so a read may be answered twice;
    // every answer must be fresh.
    if (rs.index < it->second) {
      Fail(absl::StrFormat(
          "stale read: %s at node %d returned index %d but index %d was "
          "acknowledged before the read was issued",
          rs.request_ctx, n.id, rs.index, it->second));
    }
    ++result_.reads_served;
  }
  n.raw->Advance(rd);
  if (n.applied != n.raw->raft().raft_log().applied()) {
    Fail(absl::StrFormat("node %d applied %d but raft says %d", n.id, n.applied,
                         n.raw->raft().raft_log().applied()));
  }
}

void Sim::InstallSnapshot(Node& n, const Snapshot& s) {
  unsigned long long idx = 0, h = 0;
  std::sscanf(s.data.c_str(), "%llu:%llu", &idx, &h);
  if (idx != s.metadata.index) {
    Fail(absl::StrFormat("snapshot data index %d != metadata index %d", idx,
                         s.metadata.index));
  }
  if (idx == 0 || idx > applied_.size() || applied_[idx - 1].app_hash != h) {
    Fail(
        absl::StrFormat("node %d installed snapshot at %d whose state was "
                        "never applied",
                        n.id, idx));
    return;
  }
  if (idx < n.applied) {
    Fail(absl::StrFormat("node %d installs snapshot %d below applied %d", n.id,
                         idx, n.applied));
  }
  n.applied = idx;
  n.app_hash = h;
  n.conf = s.metadata.conf_state;
  Log("node %d installed snapshot %d/%d", n.id, s.metadata.term, idx);
}

void Sim::ApplyEntry(Node& n, const Entry& e) {
  if (e.index != n.applied + 1) {
    Fail(absl::StrFormat("node %d applies %d after %d", n.id, e.index,
                         n.applied));
    return;
  }
  n.app_hash = EntryHash(n.app_hash, e);
  n.applied = e.index;
  if (e.index <= applied_.size()) {
    const Applied& a = applied_[e.index - 1];
    if (a.term != e.term || a.app_hash != n.app_hash) {
      Fail(absl::StrFormat(
          "state machine safety violated: node %d applied %s at %d, "
          "another node applied term %d there",
          n.id, DescribeEntry(e), e.index, a.term));
      return;
    }
  } else {
    applied_.push_back(Applied{e.term, n.app_hash});
    if (commit_bounds_.empty() ||
        commit_bounds_.back().first != max_term_seen_) {
      commit_bounds_.push_back({max_term_seen_, e.index});
    } else {
      commit_bounds_.back().second = e.index;
    }
  }
  if (e.type == EntryType::kConfChange) {
    absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
    if (!cc.ok()) {
      Fail(absl::StrCat("undecodable conf change at ", e.index));
      return;
    }
    absl::StatusOr<ConfState> cs = n.raw->ApplyConfChange(*cc);
    if (!cs.ok()) {
      Fail(absl::StrCat("node ", n.id, " failed to apply conf change ",
                        DescribeConfChange(*cc), ": ", cs.status().ToString()));
      return;
    }
    n.conf = *cs;
    if (n.raw->raft().state() == StateType::kLeader) ++result_.conf_changes;
    Log("node %d applied conf change %s at %d -> %s", n.id,
        DescribeConfChange(*cc), e.index, DescribeConfState(*cs));
  } else if (!marker_.empty() && e.data == marker_) {
    n.marker_applied = true;
  }
}

void Sim::MaybeSnapshot(Node& n) {
  if (!n.raw) return;
  absl::StatusOr<Snapshot> cur = n.storage->GetSnapshot();
  const uint64_t snap_index = cur.ok() ? cur->metadata.index : 0;
  if (n.applied < snap_index + 3) return;
  const std::string data = absl::StrCat(n.applied, ":", n.app_hash);
  absl::StatusOr<Snapshot> s =
      n.storage->CreateSnapshot(n.applied, &n.conf, data);
  if (!s.ok()) return;
  const uint64_t keep = Uniform(4);
  const uint64_t compact = n.applied > keep ? n.applied - keep : n.applied;
  if (compact > n.chain_base && compact <= n.storage->LastIndex()) {
    if (n.storage->Compact(compact).ok()) {
      n.chain.erase(
          n.chain.begin(),
          n.chain.begin() + static_cast<long>(compact - n.chain_base));
      n.chain_base = compact;
    }
  }
  Log("node %d snapshot at %d, compacted to %d", n.id, n.applied, compact);
}

void Sim::RandomClientOps() {
  std::vector<Node*> live = LiveNodes();
  if (live.empty()) return;
  if (Chance(0.3)) {
    std::vector<Node*> leaders = Leaders();
    Node* target =
        (!leaders.empty() && Chance(0.9)) ? Pick(leaders) : Pick(live);
    std::vector<std::string> batch;
    const int n = Chance(0.2) ? 1 + static_cast<int>(Uniform(8)) : 1;
    for (int i = 0; i < n; ++i) {
      batch.push_back(
          absl::StrCat("p", ++prop_seq_, "-", std::string(Uniform(48), 'x')));
    }
    absl::Status s = n == 1 ? target->raw->Propose(batch[0])
                            : target->raw->ProposeBatch(batch);
    Log("propose %d entries at %d: %s", n, target->id, s.ToString());
  }
  if (Chance(0.05)) {
    Node* target = Pick(live);
    uint64_t required = applied_.size();
    std::string ctx = absl::StrCat("r", ++read_seq_);
    absl::Status s = target->raw->ReadIndex(ctx);
    if (s.ok()) pending_reads_[ctx] = required;
    Log("read %s at %d (must see %d): %s", ctx, target->id, required,
        s.ToString());
  }
  if (Chance(0.004)) {
    std::vector<Node*> leaders = Leaders();
    if (!leaders.empty()) {
      Node* l = Pick(leaders);
      const auto& voters = l->raw->raft().tracker().config.voters.incoming;
      if (!voters.empty()) {
        std::vector<uint64_t> v(voters.begin(), voters.end());
        const uint64_t to = Pick(v);
        absl::Status s = l->raw->TransferLeadership(to);
        ++result_.transfers;
        Log("transfer leadership %d -> %d: %s", l->id, to, s.ToString());
      }
    }
  }
  if (Chance(0.03)) MaybeSnapshot(*Pick(live));
}

void Sim::RandomMembershipChange() {
  std::vector<Node*> leaders = Leaders();
  if (leaders.empty()) return;
  Node* l = Pick(leaders);
  const Raft& r = l->raw->raft();
  const TrackerConfig& cfg = r.tracker().config;
  if (cfg.voters.IsJoint()) {
    if (!cfg.auto_leave) {
      absl::Status s = l->raw->ProposeConfChange(ConfChange{});
      Log("propose leave-joint at %d: %s", l->id, s.ToString());
    }
    return;
  }
  std::vector<uint64_t> voters(cfg.voters.incoming.begin(),
                               cfg.voters.incoming.end());
  std::vector<uint64_t> in_sync_learners;
  for (uint64_t id : cfg.learners) {
    auto it = r.tracker().progress.find(id);
    if (it != r.tracker().progress.end() &&
        it->second.match >= r.raft_log().committed()) {
      in_sync_learners.push_back(id);
    }
  }
  const size_t size = voters.size() + cfg.learners.size();
  ConfChange cc;
  const uint64_t t = Uniform(3);
  auto joint = [&]() {
    cc.transition = t == 0   ? ConfChangeTransition::kAuto
                    : t == 1 ? ConfChangeTransition::kJointImplicit
                             : ConfChangeTransition::kJointExplicit;
  };
  uint64_t new_id = 0;
  switch (Uniform(7)) {
    case 0:  // add a learner
    case 1:
      if (size >= kMaxConfigSize || next_id_ > kMaxNodeIds) return;
      new_id = next_id_++;
      cc.changes.push_back({ConfChangeType::kAddLearnerNode, new_id});
      break;
    case 2:  // promote an in-sync learner
      if (in_sync_learners.empty()) return;
      cc.changes.push_back({ConfChangeType::kAddNode, Pick(in_sync_learners)});
      break;
    case 3: {  // remove a voter, often the leader itself
      if (voters.size() <= 1) return;
      const uint64_t v = Chance(0.4) ? l->id : Pick(voters);
      cc.changes.push_back({ConfChangeType::kRemoveNode, v});
      break;
    }
    case 4: {  // replace a voter by an in-sync learner
      if (in_sync_learners.empty()) return;
      cc.changes.push_back({ConfChangeType::kAddNode, Pick(in_sync_learners)});
      cc.changes.push_back({ConfChangeType::kRemoveNode, Pick(voters)});
      joint();
      break;
    }
    case 5: {  // shrink to one voter (maybe demoting the others)
      if (voters.size() <= 1) return;
      const uint64_t keep = Pick(voters);
      const bool demote = Chance(0.5);
      for (uint64_t v : voters) {
        if (v == keep) continue;
        cc.changes.push_back({demote ? ConfChangeType::kAddLearnerNode
                                     : ConfChangeType::kRemoveNode,
                              v});
      }
      joint();
      break;
    }
    case 6: {  // grow: promote every in-sync learner at once
      if (in_sync_learners.size() < 2) return;
      for (uint64_t id : in_sync_learners) {
        cc.changes.push_back({ConfChangeType::kAddNode, id});
      }
      joint();
      break;
    }
  }
  if (new_id != 0) CreateNode(new_id, {});
  absl::Status s = l->raw->ProposeConfChange(cc);
  Log("propose conf change %s at %d: %s", DescribeConfChange(cc), l->id,
      s.ToString());
}

void Sim::RandomFaults() {
  std::vector<uint64_t> ids;
  for (auto& [id, n] : nodes_) ids.push_back(id);
  if (Chance(0.004) && ids.size() >= 2) {
    // Symmetric partition into two random groups.
    blocked_.clear();
    std::set<uint64_t> side;
    for (uint64_t id : ids) {
      if (Chance(0.5)) side.insert(id);
    }
    for (uint64_t a : ids) {
      for (uint64_t b : ids) {
        if ((side.count(a) > 0) != (side.count(b) > 0)) blocked_.insert({a, b});
      }
    }
    heal_partitions_at_ = now_ + 20 + static_cast<int64_t>(Uniform(200));
    Log("partition {%s} | rest", absl::StrJoin(side, ","));
  }
  if (Chance(0.003) && ids.size() >= 2) {
    const uint64_t a = Pick(ids), b = Pick(ids);
    if (a != b) {
      blocked_.insert({a, b});
      heal_partitions_at_ = now_ + 20 + static_cast<int64_t>(Uniform(200));
      Log("one-way partition %d -> %d", a, b);
    }
  }
  if (heal_partitions_at_ >= 0 && now_ >= heal_partitions_at_) {
    blocked_.clear();
    heal_partitions_at_ = -1;
    Log("partitions healed");
  }
  if (Chance(crash_p_)) {
    std::vector<Node*> live = LiveNodes();
    if (!live.empty()) Crash(*Pick(live));
  }
}

void Sim::CheckLeaderCompleteness(const Node& n) {
  const Raft& r = n.raw->raft();
  // The highest index that was applied while every term was below ours.
  uint64_t index = 0;
  for (const auto& [bound, idx] : commit_bounds_) {
    if (bound < r.term()) index = idx;
  }
  if (index == 0) return;
  const RaftLog& log = r.raft_log();
  if (index + 1 < log.FirstIndex()) return;  // covered by its snapshot
  const uint64_t want = applied_[index - 1].term;
  if (log.LastIndex() < index || log.ZeroTermOnError(index) != want) {
    Fail(absl::StrFormat(
        "leader completeness violated: leader %d of term %d lacks committed "
        "entry %d/%d (has term %d, last %d)",
        n.id, r.term(), want, index, log.ZeroTermOnError(index),
        log.LastIndex()));
  }
}

void Sim::CheckSafety() {
  for (Node* n : LiveNodes()) {
    const Raft& r = n->raw->raft();
    max_term_seen_ = std::max(max_term_seen_, r.term());
    if (r.protocol_violations() > 0) {
      Fail(absl::StrCat("node ", n->id, " saw ", r.protocol_violations(),
                        " protocol violations"));
    }
    if (r.state() == StateType::kLeader) {
      auto [it, inserted] = leader_by_term_.emplace(r.term(), n->id);
      if (!inserted && it->second != n->id) {
        Fail(
            absl::StrFormat("election safety violated: %d and %d both lead "
                            "term %d",
                            it->second, n->id, r.term()));
      }
      CheckLeaderCompleteness(*n);
    }
    // Durability: a node never forgets what it applied (volatile state is
    // rebuilt from its snapshot on restart, never past its persisted log).
    if (r.raft_log().committed() < n->applied) {
      Fail(absl::StrFormat("node %d committed %d < applied %d", n->id,
                           r.raft_log().committed(), n->applied));
    }
  }
}

void Sim::Step(bool chaos) {
  ++now_;
  for (auto& [id, n] : nodes_) {
    if (!n.raw && n.restart_at >= 0 && now_ >= n.restart_at) StartNode(n);
  }
  for (Node* n : LiveNodes()) {
    if (Chance(n->tick_rate)) n->raw->Tick();
  }
  DeliverDue();
  if (chaos) {
    RandomClientOps();
    if (opts_.membership && Chance(0.02)) RandomMembershipChange();
    RandomFaults();
  }
  // Drain Readys (bounded: a Ready can produce messages only to others).
  for (int round = 0; round < 3; ++round) {
    std::vector<Node*> live = LiveNodes();
    for (size_t i = live.size(); i > 1; --i) {
      std::swap(live[i - 1], live[Uniform(i)]);
    }
    for (Node* n : live) ProcessReady(*n);
  }
  CheckSafety();
}

void Sim::Heal() {
  blocked_.clear();
  heal_partitions_at_ = -1;
  drop_p_ = 0;
  dup_p_ = 0;
  crash_p_ = 0;
  for (auto& [id, n] : nodes_) {
    if (!n.raw) StartNode(n);
  }
  Log("healed: no more faults");
}

bool Sim::LivenessPhase() {
  marker_.clear();
  uint64_t marker_leader = 0;
  uint64_t marker_term = 0;
  for (int i = 0; i < opts_.liveness_steps && result_.ok; ++i) {
    Step(/*chaos=*/false);
    std::vector<Node*> leaders = Leaders();
    Node* l = nullptr;
    for (Node* c : leaders) {
      if (l == nullptr || c->raw->raft().term() > l->raw->raft().term()) l = c;
    }
    if (l == nullptr) continue;
    if (l->id != marker_leader || l->raw->raft().term() != marker_term ||
        marker_.empty()) {
      const std::string m = absl::StrCat("marker-", now_);
      if (l->raw->Propose(m).ok()) {
        marker_ = m;
        marker_leader = l->id;
        marker_term = l->raw->raft().term();
        for (auto& [id, n] : nodes_) n.marker_applied = false;
        Log("liveness marker %s proposed at %d", m, l->id);
      }
      continue;
    }
    // Done once every member of the leader's configuration applied it.
    const TrackerConfig& cfg = l->raw->raft().tracker().config;
    bool done = l->marker_applied;
    std::set<uint64_t> members = cfg.voters.IDs();
    members.insert(cfg.learners.begin(), cfg.learners.end());
    for (uint64_t id : members) {
      Node* n = FindNode(id);
      done = done && n != nullptr && n->marker_applied;
    }
    if (done && !cfg.voters.IsJoint()) return true;
    if (done && cfg.voters.IsJoint() && !cfg.auto_leave) {
      (void)l->raw->ProposeConfChange(ConfChange{});
    }
  }
  if (result_.ok) {
    Fail(absl::StrCat("liveness: no leader made progress within ",
                      opts_.liveness_steps, " steps after healing\n",
                      DumpState()));
  }
  return false;
}

std::string Sim::DumpState() {
  std::string out;
  for (auto& [id, n] : nodes_) {
    if (!n.raw) {
      absl::StrAppend(&out, "  node ", id, ": down\n");
      continue;
    }
    const Raft& r = n.raw->raft();
    absl::StrAppend(
        &out, absl::StrFormat(
                  "  node %d: %s term=%d lead=%d vote=%d commit=%d "
                  "applied=%d last=%d first=%d cfg=%s\n",
                  id, StateTypeName(r.state()), r.term(), r.lead(), r.vote(),
                  r.raft_log().committed(), n.applied, r.raft_log().LastIndex(),
                  r.raft_log().FirstIndex(), r.tracker().config.DebugString()));
    if (r.state() == StateType::kLeader) {
      for (const auto& [pid, pr] : r.tracker().progress) {
        absl::StrAppend(&out, "    ", pid, ": ", pr.DebugString(), "\n");
      }
    }
  }
  return out;
}

SimResult Sim::Run() {
  // Per-seed shape of the run.
  const int size = 3 + static_cast<int>(Uniform(5));  // 3..7 voters
  base_config_.election_tick = 6 + static_cast<int>(Uniform(7));
  base_config_.heartbeat_tick = 1 + static_cast<int>(Uniform(2));
  base_config_.max_size_per_msg_bytes =
      Chance(0.5) ? 1 << 20 : 64 + Uniform(512);
  base_config_.max_inflight_msgs = 1 + static_cast<int>(Uniform(16));
  base_config_.max_inflight_bytes =
      Chance(0.3) ? base_config_.max_size_per_msg_bytes * 4 : 0;
  base_config_.max_uncommitted_entries_bytes = Chance(0.3) ? 2048 : 0;
  base_config_.check_quorum = true;
  base_config_.pre_vote = Chance(0.85);
  base_config_.check_invariants = true;
  drop_p_ = Chance(0.2) ? 0 : 0.1 * static_cast<double>(Uniform(100)) / 100.0;
  dup_p_ = 0.05 * static_cast<double>(Uniform(100)) / 100.0;
  crash_p_ = Chance(0.3) ? 0 : 0.002;
  max_delay_ = static_cast<int>(Uniform(6));
  Log("seed %d: %d voters, election_tick=%d heartbeat_tick=%d drop=%.3f "
      "dup=%.3f crash=%.4f prevote=%d",
      opts_.seed, size, base_config_.election_tick, base_config_.heartbeat_tick,
      drop_p_, dup_p_, crash_p_, base_config_.pre_vote);

  std::vector<uint64_t> voters;
  for (int i = 0; i < size; ++i) voters.push_back(next_id_++);
  for (uint64_t id : voters) CreateNode(id, voters);

  for (int i = 0; i < opts_.chaos_steps && result_.ok; ++i) Step(true);
  if (result_.ok) {
    Heal();
    LivenessPhase();
  }
  result_.steps = now_;
  result_.max_applied = applied_.size();
  return result_;
}

}  // namespace

SimResult RunSimulation(const SimOptions& opts) {
  Sim sim(opts);
  return sim.Run();
}

}  // namespace lockd::raft::sim
