#include "lockd/server/membership.h"

#include <algorithm>
#include <utility>

namespace lockd {
namespace {

MemberList::iterator FindIn(MemberList* table, uint64_t id) {
  return std::find_if(
      table->begin(), table->end(),
      [id](const etcdserverpb::Member& m) { return m.id() == id; });
}

}  // namespace

void ApplyConfChangeToTable(const raft::ConfChange& cc,
                            const internal::MemberChange& context,
                            MemberList* table) {
  for (const raft::ConfChangeSingle& change : cc.changes) {
    auto it = FindIn(table, change.node_id);
    switch (change.type) {
      case raft::ConfChangeType::kAddNode:
      case raft::ConfChangeType::kAddLearnerNode: {
        const bool learner =
            change.type == raft::ConfChangeType::kAddLearnerNode;
        if (it != table->end()) {
          // Promotion (learner -> voter); raft refuses the reverse for a
          // voter that is in the configuration, and so do we.
          if (it->islearner() && !learner) it->set_islearner(false);
          break;
        }
        etcdserverpb::Member m;
        if (context.member().id() == change.node_id) m = context.member();
        m.set_id(change.node_id);
        m.set_islearner(learner);
        table->push_back(std::move(m));
        break;
      }
      case raft::ConfChangeType::kRemoveNode:
        if (it != table->end()) table->erase(it);
        break;
    }
  }
  std::sort(table->begin(), table->end(),
            [](const etcdserverpb::Member& a, const etcdserverpb::Member& b) {
              return a.id() < b.id();
            });
}

std::string EncodeMemberTable(const MemberList& table) {
  internal::MemberTable t;
  t.set_version(1);
  for (const auto& m : table) *t.add_members() = m;
  return t.SerializeAsString();
}

std::map<uint64_t, std::string> BootstrapContexts(const ServerConfig& config) {
  std::map<uint64_t, std::string> contexts;
  for (const MemberConfig& m : config.members) {
    internal::MemberChange context;
    context.set_version(1);
    etcdserverpb::Member* member = context.mutable_member();
    member->set_id(m.id);
    member->set_name(m.name);
    for (const Url& u : m.peer_urls) member->add_peerurls(u.ToString());
    contexts[m.id] = context.SerializeAsString();
  }
  return contexts;
}

absl::StatusOr<MemberList> DecodeMemberTable(const std::string& bytes) {
  internal::MemberTable t;
  if (!t.ParseFromString(bytes) || t.version() != 1) {
    return absl::InternalError("corrupt store: member table");
  }
  return MemberList(t.members().begin(), t.members().end());
}

absl::Status Membership::Load(const kv::MvccStore& store) {
  absl::StatusOr<std::string> bytes = store.GetRecord(kMembersRecord);
  MemberList table;
  if (bytes.ok()) {
    absl::StatusOr<MemberList> t = DecodeMemberTable(*bytes);
    if (!t.ok()) return t.status();
    table = *std::move(t);
  } else if (!absl::IsNotFound(bytes.status())) {
    return bytes.status();
  }
  absl::MutexLock lock(&mu_);
  table_ = std::move(table);
  return absl::OkStatus();
}

MemberList Membership::Members() const {
  absl::MutexLock lock(&mu_);
  return table_;
}

std::optional<etcdserverpb::Member> Membership::Find(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  for (const auto& m : table_) {
    if (m.id() == id) return m;
  }
  return std::nullopt;
}

bool Membership::Known() const {
  absl::MutexLock lock(&mu_);
  return !table_.empty();
}

void Membership::Replace(MemberList table) {
  {
    absl::MutexLock lock(&mu_);
    table_ = table;
  }
  if (listener_) listener_(table);
}

void Membership::SetListener(std::function<void(const MemberList&)> listener) {
  listener_ = std::move(listener);
}

}  // namespace lockd
