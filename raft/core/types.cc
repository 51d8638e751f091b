#include "raft/core/types.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace lockd::raft {

bool ConfChange::EntersJoint(bool* auto_leave) const {
  // Like etcd: a multi-change or an explicitly joint transition enters a
  // joint configuration; a single change with kAuto is applied directly.
  *auto_leave = false;
  if (transition == ConfChangeTransition::kAuto && changes.size() <= 1) {
    return false;
  }
  if (changes.empty()) return false;
  *auto_leave = transition != ConfChangeTransition::kJointExplicit;
  return true;
}

namespace {

constexpr uint8_t kConfChangeVersion1 = 1;
// Bounds on what a decoder accepts, so a corrupt entry cannot make it
// allocate without limit.
constexpr uint64_t kConfChangeMaxChanges = 1024;

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(absl::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63 && !in->empty(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>((*in)[0]);
    in->remove_prefix(1);
    if (shift == 63 && byte > 1) return false;
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string EncodeConfChange(const ConfChange& cc) {
  std::string out;
  out.push_back(static_cast<char>(kConfChangeVersion1));
  PutVarint(&out, static_cast<uint64_t>(cc.transition));
  PutVarint(&out, cc.changes.size());
  for (const ConfChangeSingle& c : cc.changes) {
    PutVarint(&out, static_cast<uint64_t>(c.type));
    PutVarint(&out, c.node_id);
  }
  PutVarint(&out, cc.context.size());
  out.append(cc.context);
  return out;
}

absl::StatusOr<ConfChange> DecodeConfChange(absl::string_view data) {
  if (data.empty()) return absl::DataLossError("conf change: empty");
  const uint8_t version = static_cast<uint8_t>(data[0]);
  data.remove_prefix(1);
  if (version != kConfChangeVersion1) {
    return absl::DataLossError(
        absl::StrCat("conf change: unknown version ", version));
  }
  ConfChange cc;
  uint64_t v = 0;
  if (!GetVarint(&data, &v) || v > 2) {
    return absl::DataLossError("conf change: bad transition");
  }
  cc.transition = static_cast<ConfChangeTransition>(v);
  uint64_t n = 0;
  if (!GetVarint(&data, &n) || n > kConfChangeMaxChanges) {
    return absl::DataLossError("conf change: bad change count");
  }
  cc.changes.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t type = 0, id = 0;
    if (!GetVarint(&data, &type) || type > 2 || !GetVarint(&data, &id)) {
      return absl::DataLossError("conf change: bad change");
    }
    cc.changes.push_back({static_cast<ConfChangeType>(type), id});
  }
  uint64_t len = 0;
  if (!GetVarint(&data, &len) || len != data.size()) {
    return absl::DataLossError("conf change: bad context length");
  }
  cc.context = std::string(data);
  return cc;
}

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kHup:
      return "MsgHup";
    case MessageType::kBeat:
      return "MsgBeat";
    case MessageType::kProp:
      return "MsgProp";
    case MessageType::kApp:
      return "MsgApp";
    case MessageType::kAppResp:
      return "MsgAppResp";
    case MessageType::kVote:
      return "MsgVote";
    case MessageType::kVoteResp:
      return "MsgVoteResp";
    case MessageType::kSnap:
      return "MsgSnap";
    case MessageType::kHeartbeat:
      return "MsgHeartbeat";
    case MessageType::kHeartbeatResp:
      return "MsgHeartbeatResp";
    case MessageType::kUnreachable:
      return "MsgUnreachable";
    case MessageType::kSnapStatus:
      return "MsgSnapStatus";
    case MessageType::kCheckQuorum:
      return "MsgCheckQuorum";
    case MessageType::kTransferLeader:
      return "MsgTransferLeader";
    case MessageType::kTimeoutNow:
      return "MsgTimeoutNow";
    case MessageType::kReadIndex:
      return "MsgReadIndex";
    case MessageType::kReadIndexResp:
      return "MsgReadIndexResp";
    case MessageType::kPreVote:
      return "MsgPreVote";
    case MessageType::kPreVoteResp:
      return "MsgPreVoteResp";
  }
  return "MsgUnknown";
}

bool IsLocalMessage(MessageType t) {
  return t == MessageType::kHup || t == MessageType::kBeat ||
         t == MessageType::kUnreachable || t == MessageType::kSnapStatus ||
         t == MessageType::kCheckQuorum;
}

bool IsResponseMessage(MessageType t) {
  return t == MessageType::kAppResp || t == MessageType::kVoteResp ||
         t == MessageType::kHeartbeatResp || t == MessageType::kUnreachable ||
         t == MessageType::kPreVoteResp;
}

const char* ConfChangeTypeName(ConfChangeType t) {
  switch (t) {
    case ConfChangeType::kAddNode:
      return "v";
    case ConfChangeType::kAddLearnerNode:
      return "l";
    case ConfChangeType::kRemoveNode:
      return "r";
  }
  return "?";
}

std::string DescribeConfChange(const ConfChange& cc) {
  std::string out;
  for (const ConfChangeSingle& c : cc.changes) {
    if (!out.empty()) out.push_back(' ');
    absl::StrAppend(&out, ConfChangeTypeName(c.type), c.node_id);
  }
  if (cc.transition != ConfChangeTransition::kAuto) {
    absl::StrAppend(&out, cc.transition == ConfChangeTransition::kJointImplicit
                              ? " (implicit)"
                              : " (explicit)");
  }
  return out.empty() ? "leave-joint" : out;
}

std::string DescribeEntry(const Entry& e) {
  if (e.type == EntryType::kConfChange) {
    absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
    return absl::StrFormat("%d/%d EntryConfChange %s", e.term, e.index,
                           cc.ok() ? DescribeConfChange(*cc) : "<corrupt>");
  }
  if (e.data.size() > 32) {
    return absl::StrFormat("%d/%d EntryNormal <%d bytes>", e.term, e.index,
                           e.data.size());
  }
  return absl::StrFormat("%d/%d EntryNormal %s", e.term, e.index,
                         absl::StrCat("\"", e.data, "\""));
}

std::string DescribeConfState(const ConfState& cs) {
  std::string out =
      absl::StrCat("voters=(", absl::StrJoin(cs.voters, " "), ")");
  if (!cs.voters_outgoing.empty()) {
    absl::StrAppend(&out, "&&(", absl::StrJoin(cs.voters_outgoing, " "), ")");
  }
  if (!cs.learners.empty()) {
    absl::StrAppend(&out, " learners=(", absl::StrJoin(cs.learners, " "), ")");
  }
  if (!cs.learners_next.empty()) {
    absl::StrAppend(&out, " learners_next=(",
                    absl::StrJoin(cs.learners_next, " "), ")");
  }
  if (cs.auto_leave) absl::StrAppend(&out, " autoleave");
  return out;
}

std::string DescribeHardState(const HardState& hs) {
  return absl::StrFormat("Term:%d Vote:%d Commit:%d", hs.term, hs.vote,
                         hs.commit);
}

std::string DescribeMessage(const Message& m) {
  std::string out =
      absl::StrFormat("%d->%d %s Term:%d Log:%d/%d", m.from, m.to,
                      MessageTypeName(m.type), m.term, m.log_term, m.index);
  if (m.reject) absl::StrAppend(&out, " Rejected (Hint: ", m.reject_hint, ")");
  if (m.commit != 0) absl::StrAppend(&out, " Commit:", m.commit);
  if (m.commit_only) absl::StrAppend(&out, " CommitOnly");
  if (!m.entries.empty()) {
    absl::StrAppend(&out, " Entries:[");
    for (size_t i = 0; i < m.entries.size(); ++i) {
      if (i > 0) absl::StrAppend(&out, ", ");
      absl::StrAppend(&out, DescribeEntry(m.entries[i]));
    }
    absl::StrAppend(&out, "]");
  }
  if (!m.snapshot.IsEmpty()) {
    absl::StrAppend(&out, " Snapshot: Index:", m.snapshot.metadata.index,
                    " Term:", m.snapshot.metadata.term, " ",
                    DescribeConfState(m.snapshot.metadata.conf_state));
  }
  if (!m.context.empty()) absl::StrAppend(&out, " Context:", m.context);
  return out;
}

}  // namespace lockd::raft
