#include "raft/transport/convert.h"

namespace lockd::raft {
namespace {

void ConfToProto(const ConfState& cs, raftpb::ConfState* out) {
  for (uint64_t v : cs.voters) out->add_voters(v);
  for (uint64_t v : cs.learners) out->add_learners(v);
  for (uint64_t v : cs.voters_outgoing) out->add_voters_outgoing(v);
  for (uint64_t v : cs.learners_next) out->add_learners_next(v);
  out->set_auto_leave(cs.auto_leave);
}

void ConfFromProto(const raftpb::ConfState& cs, ConfState* out) {
  out->voters.assign(cs.voters().begin(), cs.voters().end());
  out->learners.assign(cs.learners().begin(), cs.learners().end());
  out->voters_outgoing.assign(cs.voters_outgoing().begin(),
                              cs.voters_outgoing().end());
  out->learners_next.assign(cs.learners_next().begin(),
                            cs.learners_next().end());
  out->auto_leave = cs.auto_leave();
}

}  // namespace

void ToProto(const Message& m, raftpb::Message* out) {
  out->set_type(static_cast<raftpb::Message::Type>(m.type));
  out->set_to(m.to);
  out->set_from(m.from);
  out->set_term(m.term);
  out->set_log_term(m.log_term);
  out->set_index(m.index);
  out->set_commit(m.commit);
  out->set_reject(m.reject);
  out->set_reject_hint(m.reject_hint);
  if (!m.context.empty()) out->set_context(m.context);
  out->set_commit_only(m.commit_only);
  out->mutable_entries()->Reserve(static_cast<int>(m.entries.size()));
  for (const Entry& e : m.entries) {
    raftpb::Entry* pe = out->add_entries();
    pe->set_term(e.term);
    pe->set_index(e.index);
    pe->set_type(static_cast<raftpb::Entry::Type>(e.type));
    pe->set_data(e.data);
  }
  if (!m.snapshot.IsEmpty()) {
    raftpb::Snapshot* ps = out->mutable_snapshot();
    ps->set_data(m.snapshot.data);
    ps->mutable_metadata()->set_index(m.snapshot.metadata.index);
    ps->mutable_metadata()->set_term(m.snapshot.metadata.term);
    ConfToProto(m.snapshot.metadata.conf_state,
                ps->mutable_metadata()->mutable_conf_state());
  }
}

absl::Status FromProto(const raftpb::Message& m, Message* out) {
  if (m.type() < 0 || m.type() >= kNumMessageTypes) {
    return absl::InvalidArgumentError("unknown raft message type");
  }
  out->type = static_cast<MessageType>(m.type());
  out->to = m.to();
  out->from = m.from();
  out->term = m.term();
  out->log_term = m.log_term();
  out->index = m.index();
  out->commit = m.commit();
  out->reject = m.reject();
  out->reject_hint = m.reject_hint();
  out->context = m.context();
  out->commit_only = m.commit_only();
  out->entries.clear();
  out->entries.reserve(m.entries_size());
  for (const raftpb::Entry& pe : m.entries()) {
    if (pe.type() != raftpb::Entry::NORMAL &&
        pe.type() != raftpb::Entry::CONF_CHANGE) {
      return absl::InvalidArgumentError("unknown raft entry type");
    }
    Entry e;
    e.term = pe.term();
    e.index = pe.index();
    e.type = static_cast<EntryType>(pe.type());
    e.data = pe.data();
    out->entries.push_back(std::move(e));
  }
  if (m.has_snapshot()) {
    out->snapshot.data = m.snapshot().data();
    out->snapshot.metadata.index = m.snapshot().metadata().index();
    out->snapshot.metadata.term = m.snapshot().metadata().term();
    ConfFromProto(m.snapshot().metadata().conf_state(),
                  &out->snapshot.metadata.conf_state);
  }
  return absl::OkStatus();
}

}  // namespace lockd::raft
