// Conversions between the core's plain message structs and the wire format
// (lockd.raftpb).
#ifndef LOCKD_RAFT_TRANSPORT_CONVERT_H_
#define LOCKD_RAFT_TRANSPORT_CONVERT_H_

#include "absl/status/status.h"
#include "raft/core/types.h"
#include "raftpb/raft.pb.h"

namespace lockd::raft {

void ToProto(const Message& m, raftpb::Message* out);
// Errors: kInvalidArgument for enum values this version does not know.
absl::Status FromProto(const raftpb::Message& m, Message* out);

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_TRANSPORT_CONVERT_H_
