// Plain value types of the Raft core: log entries, persistent state,
// membership and peer messages.
//
// They mirror lockd.raftpb (proto/raftpb/raft.proto) concept for concept so
// the transport can convert field by field, but they are plain structs: the
// core never touches protobuf, which keeps it fast and deterministic.
#ifndef LOCKD_RAFT_CORE_TYPES_H_
#define LOCKD_RAFT_CORE_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lockd::raft {

// 0 is never a valid node id; it means "none" in vote and leader fields.
inline constexpr uint64_t kNone = 0;

enum class EntryType : uint8_t {
  kNormal = 0,      // opaque application command
  kConfChange = 1,  // data is an EncodeConfChange() image
};

struct Entry {
  uint64_t term = 0;
  uint64_t index = 0;
  EntryType type = EntryType::kNormal;
  std::string data;

  // Bytes counted against size limits (message size, uncommitted bytes).
  uint64_t PayloadSize() const { return data.size(); }
};

// State that must be durable before any message depending on it is sent.
struct HardState {
  uint64_t term = 0;
  uint64_t vote = kNone;  // candidate voted for in `term`
  uint64_t commit = 0;

  bool IsEmpty() const { return term == 0 && vote == kNone && commit == 0; }
  friend bool operator==(const HardState& a, const HardState& b) {
    return a.term == b.term && a.vote == b.vote && a.commit == b.commit;
  }
  friend bool operator!=(const HardState& a, const HardState& b) {
    return !(a == b);
  }
};

// Membership. All id lists are sorted ascending and free of duplicates.
// During joint consensus `voters_outgoing` holds the old voter set.
struct ConfState {
  std::vector<uint64_t> voters;
  std::vector<uint64_t> learners;
  std::vector<uint64_t> voters_outgoing;
  // Outgoing voters that become learners when the joint config is left.
  std::vector<uint64_t> learners_next;
  bool auto_leave = false;

  friend bool operator==(const ConfState& a, const ConfState& b) {
    return a.voters == b.voters && a.learners == b.learners &&
           a.voters_outgoing == b.voters_outgoing &&
           a.learners_next == b.learners_next && a.auto_leave == b.auto_leave;
  }
  friend bool operator!=(const ConfState& a, const ConfState& b) {
    return !(a == b);
  }
};

struct SnapshotMetadata {
  ConfState conf_state;
  uint64_t index = 0;  // last log index covered by the snapshot
  uint64_t term = 0;   // term of the entry at `index`
};

struct Snapshot {
  std::string data;  // state-machine image, opaque to Raft
  SnapshotMetadata metadata;

  bool IsEmpty() const { return metadata.index == 0; }
};

enum class ConfChangeType : uint8_t {
  kAddNode = 0,
  kAddLearnerNode = 1,
  kRemoveNode = 2,
};

struct ConfChangeSingle {
  ConfChangeType type = ConfChangeType::kAddNode;
  uint64_t node_id = 0;
};

enum class ConfChangeTransition : uint8_t {
  // One change is applied directly; several use joint consensus which is
  // left automatically.
  kAuto = 0,
  // Always joint consensus, left automatically.
  kJointImplicit = 1,
  // Always joint consensus; leaving needs an explicit empty ConfChange.
  kJointExplicit = 2,
};

// A membership change of one or more nodes. No changes means "leave the
// current joint configuration".
struct ConfChange {
  ConfChangeTransition transition = ConfChangeTransition::kAuto;
  std::vector<ConfChangeSingle> changes;
  std::string context;  // opaque to Raft (e.g. the new member's URLs)

  // True if this change enters a joint configuration; *auto_leave tells
  // whether the joint configuration is to be left automatically.
  bool EntersJoint(bool* auto_leave) const;
  // True if this change leaves a joint configuration.
  bool LeavesJoint() const { return changes.empty(); }
};

// Versioned, self-contained encoding of a ConfChange for Entry::data.
//
// Format v1 (all integers unsigned LEB128 varints):
//   u8 version(=1) | transition | n | n * (type, node_id) | len | context
// Decoders must keep accepting every version ever written: an old log must
// replay the same way after an upgrade.
std::string EncodeConfChange(const ConfChange& cc);
absl::StatusOr<ConfChange> DecodeConfChange(absl::string_view data);

enum class MessageType : uint8_t {
  kHup = 0,   // local: start an election
  kBeat = 1,  // local: leader should send heartbeats
  kProp = 2,  // proposal of new entries
  kApp = 3,   // append entries (leader -> follower)
  kAppResp = 4,
  kVote = 5,
  kVoteResp = 6,
  kSnap = 7,  // install snapshot (leader -> follower)
  kHeartbeat = 8,
  kHeartbeatResp = 9,
  kUnreachable = 10,  // local: transport could not reach `from`
  kSnapStatus = 11,   // local: outcome of a snapshot send (reject=failure)
  kCheckQuorum = 12,  // local: leader verifies quorum contact
  kTransferLeader = 13,
  kTimeoutNow = 14,  // leader tells the transferee to campaign now
  kReadIndex = 15,
  kReadIndexResp = 16,
  kPreVote = 17,
  kPreVoteResp = 18,
};
inline constexpr int kNumMessageTypes = 19;

const char* MessageTypeName(MessageType t);
// True for the message types that only ever come from the local node.
bool IsLocalMessage(MessageType t);
// True for the responses to a request (they carry no new information for a
// node at a higher term).
bool IsResponseMessage(MessageType t);

struct Message {
  MessageType type = MessageType::kHup;
  uint64_t to = kNone;
  uint64_t from = kNone;
  uint64_t term = 0;
  // Term of the entry at `index` (log-matching check / vote up-to-date check).
  uint64_t log_term = 0;
  uint64_t index = 0;
  std::vector<Entry> entries;
  uint64_t commit = 0;
  Snapshot snapshot;  // only for kSnap
  bool reject = false;
  // On a rejected append: follower's last index, a hint where to retry.
  uint64_t reject_hint = 0;
  std::string context;
  // On kApp without entries, to a follower known to hold every entry up to
  // `index`: it only carries the commit index, and accepting it needs no
  // answer (the answer would tell the leader nothing). Rejections are still
  // answered.
  bool commit_only = false;
};

// The sort of a conf change, for readable test output.
const char* ConfChangeTypeName(ConfChangeType t);

// Human-readable renderings for tests, golden files and crash reports.
std::string DescribeEntry(const Entry& e);
std::string DescribeMessage(const Message& m);
std::string DescribeConfState(const ConfState& cs);
std::string DescribeHardState(const HardState& hs);
std::string DescribeConfChange(const ConfChange& cc);

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_CORE_TYPES_H_
