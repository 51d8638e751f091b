// Client writes that reach a follower, proposed by the leader on the
// follower's behalf (Peer.Propose).
//
// A follower does not relay such a write as a call of its own to the leader:
// it wraps it as a log command naming itself as the origin, registers the
// client's call as the command's waiter in its state machine, and sends the
// serialized command to the leader over one long-lived stream, batched with
// the others in flight. The leader proposes each command as it is and acks
// whether it was appended; the follower answers the client when it applies
// the entry itself, as the leader answers its own clients. Both sides keep
// one stream per follower-leader pair instead of one call per write.
//
// What each outcome means for the client's call:
// - an ack with an error: the leader refused before appending (not the
//   leader any more, a hand-over, too many pending); the caller may place the
//   write again elsewhere, it cannot apply twice;
// - an ack without an error, or none (the stream broke): the entry may
//   commit, and its waiter answers the client when it applies; one that
//   never commits is answered "request timed out" at the call's deadline,
//   as etcd answers a proposal lost in a leader change.
#ifndef LOCKD_SERVER_FORWARDING_H_
#define LOCKD_SERVER_FORWARDING_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lockdpb/internal.grpc.pb.h"
#include "raft/node/node.h"

namespace lockd {

// The follower's side: one stream to the current leader. Thread-safe.
class ProposalForwarder {
 public:
  using ChannelFor =
      std::function<std::shared_ptr<grpc::Channel>(uint64_t member)>;
  // Called once, on a gRPC thread, when the leader refused the proposal;
  // must not block.
  using Refused = std::function<void(grpc::Status)>;

  explicit ProposalForwarder(ChannelFor channel_for);
  // Cancels the streams and waits for them to end.
  ~ProposalForwarder();

  // Sends `entry` (a serialized internal::Request with this `id`) to
  // `leader`. False when it could not be queued (no channel to the leader,
  // too many in flight, shutting down): nothing was sent.
  bool Send(uint64_t leader, uint64_t id, std::string entry, Refused refused);

 private:
  class Stream;
  void StreamDone(Stream* stream);

  ChannelFor channel_for_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The stream new proposals go to (null before the first, or after it
  // broke), and every stream not yet ended (each deletes itself).
  Stream* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::set<Stream*> live_ ABSL_GUARDED_BY(mu_);
};

// The leader's side: serves one Peer.Propose stream, proposing each entry
// through `node` and acking it. Entries over `max_entry_bytes`, or not a
// well-formed command, are refused.
grpc::ServerBidiReactor<internal::ForwardedProposals, internal::ProposalAcks>*
ServeForwardedProposals(raft::RaftNode* node, size_t max_entry_bytes);

}  // namespace lockd

#endif  // LOCKD_SERVER_FORWARDING_H_
