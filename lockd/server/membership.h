// The cluster's members as the replicated log defines them: who votes, who
// is a learner, their names and URLs.
//
// The table changes only when entries are applied (conf changes, member
// updates, members publishing their attributes), on the apply thread; it is
// stored in the MvccStore (record "members") in the same atomic write as the
// entry's index, so it survives restarts and travels with snapshots. Readers
// on any thread get copies.
//
// The bootstrap members' conf change entries carry their MemberChange
// context too, so a member that joins later and replays the log from the
// start builds the same table.
#ifndef LOCKD_SERVER_MEMBERSHIP_H_
#define LOCKD_SERVER_MEMBERSHIP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "etcdserverpb/rpc.pb.h"
#include "kv/mvcc/store.h"
#include "lockd/server/config.h"
#include "lockdpb/internal.pb.h"
#include "raft/node/node.h"

namespace lockd {

using MemberList = std::vector<etcdserverpb::Member>;

// The record name the table is stored under.
inline constexpr char kMembersRecord[] = "members";

// Applies one committed conf change to `table` (sorted by id). The rules
// match the raft core's, so the table and raft's configuration agree:
// adding a member that exists as a learner promotes it; adding one that
// exists otherwise, or removing an unknown one, changes nothing. A change
// without context (leaving a joint configuration) changes nothing.
void ApplyConfChangeToTable(const raft::ConfChange& cc,
                            const internal::MemberChange& context,
                            MemberList* table);

// The context of each bootstrap voter's conf change entry (see
// NodeOptions::bootstrap_contexts): the member's ID, name and peer URLs
// from `config.members`.
std::map<uint64_t, std::string> BootstrapContexts(const ServerConfig& config);

// Serialized table for the store, and back. Errors: kInternal (corrupt).
std::string EncodeMemberTable(const MemberList& table);
absl::StatusOr<MemberList> DecodeMemberTable(const std::string& bytes);

class Membership {
 public:
  // Loads the table the store holds (none yet: empty).
  absl::Status Load(const kv::MvccStore& store);

  MemberList Members() const;
  std::optional<etcdserverpb::Member> Find(uint64_t id) const;
  // True once the table has any member.
  bool Known() const;

  // Called by the state machine after a batch that changed the table is
  // durable. Runs the listener (on the apply thread; it must not block on
  // the raft node).
  void Replace(MemberList table);

  // Called with the new table after every change. Set before the node
  // starts.
  void SetListener(std::function<void(const MemberList&)> listener);

 private:
  mutable absl::Mutex mu_;
  MemberList table_ ABSL_GUARDED_BY(mu_);
  std::function<void(const MemberList&)> listener_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_MEMBERSHIP_H_
