#include "raft/core/test_cluster.h"

#include "absl/strings/str_cat.h"
#include "raft/core/check.h"

namespace lockd::raft::testing {

void Cluster::Bootstrap(const std::vector<uint64_t>& voters) {
  for (uint64_t id : voters) {
    Node& n = nodes_[id];
    n.storage = std::make_unique<MemoryStorage>();
    absl::Status s = BootstrapStorage(n.storage.get(), voters);
    RAFT_CHECK(s.ok(), "bootstrap: %s", s.ToString());
    Restart(id);
  }
}

void Cluster::AddEmptyNode(uint64_t id) {
  Node& n = nodes_[id];
  n.storage = std::make_unique<MemoryStorage>();
  Restart(id);
}

void Cluster::Restart(uint64_t id) {
  Node& n = nodes_.at(id);
  Config c;
  c.id = id;
  c.storage = n.storage.get();
  c.election_tick = 10;
  c.heartbeat_tick = 1;
  c.seed = id;
  absl::StatusOr<Snapshot> snap = n.storage->GetSnapshot();
  c.applied = snap.ok() ? snap->metadata.index : 0;
  if (tweak_) tweak_(&c);
  HardState hs;
  (void)n.storage->InitialState(&hs, &n.conf);
  n.applied.clear();
  absl::StatusOr<std::unique_ptr<RawNode>> raw = RawNode::Create(c);
  RAFT_CHECK(raw.ok(), "create: %s", raw.status().ToString());
  n.raw = *std::move(raw);
}

std::vector<uint64_t> Cluster::ids() const {
  std::vector<uint64_t> out;
  for (const auto& [id, n] : nodes_) out.push_back(id);
  return out;
}

bool Cluster::ProcessReady(uint64_t id, std::vector<std::string>* out) {
  Node& n = nodes_.at(id);
  if (!n.raw->HasReady()) return false;
  Ready rd = n.raw->GetReady();
  auto say = [&](const std::string& s) {
    if (out != nullptr) out->push_back(s);
  };
  say(absl::StrCat("> ", id, " handling Ready"));
  if (rd.soft_state.has_value()) {
    say(absl::StrCat("  Lead:", rd.soft_state->lead,
                     " State:", StateTypeName(rd.soft_state->raft_state)));
  }
  if (!rd.hard_state.IsEmpty()) {
    say(absl::StrCat("  HardState ", DescribeHardState(rd.hard_state)));
  }
  if (!rd.snapshot.IsEmpty()) {
    say(absl::StrCat("  Snapshot Index:", rd.snapshot.metadata.index,
                     " Term:", rd.snapshot.metadata.term, " ",
                     DescribeConfState(rd.snapshot.metadata.conf_state)));
    absl::Status s = n.storage->ApplySnapshot(rd.snapshot);
    RAFT_CHECK(s.ok() || IsSnapOutOfDate(s), "apply snapshot: %s",
               s.ToString());
    n.conf = rd.snapshot.metadata.conf_state;
  }
  if (!rd.entries.empty()) {
    say("  Entries:");
    for (const Entry& e : rd.entries) say("  " + DescribeEntry(e));
    absl::Status s = n.storage->Append(rd.entries);
    RAFT_CHECK(s.ok(), "append: %s", s.ToString());
  }
  if (!rd.hard_state.IsEmpty()) n.storage->SetHardState(rd.hard_state);
  if (!rd.committed_entries.empty()) {
    say("  CommittedEntries:");
    for (const Entry& e : rd.committed_entries) {
      say("  " + DescribeEntry(e));
      if (e.type == EntryType::kConfChange) {
        absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
        if (!cc.ok()) {
          say(absl::StrCat("  ERROR ", cc.status().ToString()));
          continue;
        }
        absl::StatusOr<ConfState> cs = n.raw->ApplyConfChange(*cc);
        if (cs.ok()) {
          n.conf = *cs;
          say(absl::StrCat("  INFO ", id, " switched to ",
                           DescribeConfState(*cs)));
        } else {
          say(absl::StrCat("  ERROR ", cs.status().ToString()));
        }
      } else if (!e.data.empty()) {
        n.applied.push_back(e);
      }
    }
  }
  for (const ReadState& rs : rd.read_states) {
    say(absl::StrCat("  ReadState Index:", rs.index, " Ctx:", rs.request_ctx));
    n.read_states.push_back(rs);
  }
  if (!rd.messages.empty()) {
    say("  Messages:");
    for (const Message& m : rd.messages) say("  " + DescribeMessage(m));
  }
  for (Message& m : rd.messages) queue_.push_back(std::move(m));
  n.raw->Advance(rd);
  return true;
}

int Cluster::Deliver(uint64_t to, std::vector<std::string>* out) {
  std::vector<Message> keep, now;
  for (Message& m : queue_) {
    (to == 0 || m.to == to ? now : keep).push_back(std::move(m));
  }
  queue_ = std::move(keep);
  int n = 0;
  for (Message& m : now) {
    auto it = nodes_.find(m.to);
    if (it == nodes_.end() || cut_.count({m.from, m.to}) > 0) {
      if (out != nullptr) out->push_back("  dropped: " + DescribeMessage(m));
      continue;
    }
    if (out != nullptr) out->push_back("  " + DescribeMessage(m));
    (void)it->second.raw->Step(std::move(m));
    ++n;
  }
  return n;
}

void Cluster::Stabilize(std::vector<std::string>* out) {
  for (int round = 0; round < 1000; ++round) {
    bool any = false;
    for (uint64_t id : ids()) any |= ProcessReady(id, out);
    if (!queue_.empty()) {
      if (out != nullptr) out->push_back("> delivering messages");
      Deliver(0, out);
      any = true;
    }
    if (!any) return;
  }
  RAFT_FATAL("cluster did not stabilize");
}

bool Cluster::StabilizeBounded(int rounds) {
  for (int round = 0; round < rounds; ++round) {
    bool any = false;
    for (uint64_t id : ids()) any |= ProcessReady(id);
    if (!queue_.empty()) {
      Deliver();
      any = true;
    }
    if (!any) return true;
  }
  return false;
}

void Cluster::Tick(uint64_t id, int n) {
  for (int i = 0; i < n; ++i) nodes_.at(id).raw->Tick();
}

void Cluster::Elect(uint64_t id) {
  RAFT_CHECK(raw(id).Campaign().ok(), "campaign");
}

void Cluster::Isolate(uint64_t id) {
  for (uint64_t other : ids()) {
    if (other == id) continue;
    cut_.insert({id, other});
    cut_.insert({other, id});
  }
}

uint64_t Cluster::Leader() {
  uint64_t best = 0, best_term = 0;
  for (auto& [id, n] : nodes_) {
    const Raft& r = n.raw->raft();
    if (r.state() == StateType::kLeader && r.term() > best_term) {
      best = id;
      best_term = r.term();
    }
  }
  return best;
}

}  // namespace lockd::raft::testing
