// Client writes that reach a follower, proposed by the leader on the
// follower's behalf (Peer.Propose).
//
// A follower does not relay such a write as a call of its own to the leader:
// it wraps it as a log command naming itself as the origin, registers the
// client's call as the command's waiter in its state machine, and sends the
// serialized command to the leader over one long-lived stream, batched with
// the others in flight. The leader proposes each command as it is. It
// answers with a refusal if it could not append it, or else with the result
// once it has applied it. The follower answers its client with the first of
// the leader's result and its own apply of the entry: the leader's is
// usually first, and it is the only one a follower removed from the cluster
// before the entry commits will ever get; its own apply covers a stream that
// broke after the leader took the proposal. One stream per follower-leader
// pair replaces one call per write.
//
// What each outcome means for the client's call:
// - a refusal: the proposal was never appended (not the leader any more, a
//   hand-over, too many pending); the caller may place the write again
//   elsewhere, it cannot apply twice;
// - a result: the write was applied; the client gets the result;
// - neither (the stream broke or the entry was lost in a leader change):
//   the entry may still commit, and the follower's own apply answers. The
//   leader appends it only in the term the follower named, so once the
//   follower applies an entry of a later term without having applied this
//   one, it never will: the client is answered "etcdserver: leader changed"
//   then (see KvStateMachine::Register), not at its deadline.
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
#include "absl/time/time.h"
#include "lockd/server/kv_state_machine.h"
#include "lockdpb/internal.grpc.pb.h"
#include "raft/node/node.h"

namespace lockd {

// The follower's side: one stream to the current leader. Thread-safe.
class ProposalForwarder {
 public:
  using ChannelFor =
      std::function<std::shared_ptr<grpc::Channel>(uint64_t member)>;
  // The leader refused the proposal (it was never appended). Called once,
  // on a gRPC thread; must not block.
  using Refused = std::function<void(const grpc::Status&)>;
  // The leader applied it: the result (code, message and response). Called
  // once, on a gRPC thread; must not block.
  using Applied = std::function<void(const internal::ProposalAcks::Ack&)>;

  // `self` is this member's id, the origin of every proposal it sends.
  ProposalForwarder(uint64_t self, ChannelFor channel_for);
  // Cancels the streams and waits for them to end.
  ~ProposalForwarder();

  // Sends `entry` (a serialized internal::Request with this `id`) to
  // `leader`, to be appended in `term` (its term as this member knows it;
  // 0: any) or refused; at most one of `refused` and `applied` runs, not
  // after `deadline`. False when it could not be queued (no channel to the
  // leader, too many in flight, shutting down): nothing was sent.
  bool Send(uint64_t leader, uint64_t term, uint64_t id, std::string entry,
            absl::Time deadline, Refused refused, Applied applied);

 private:
  class Stream;
  void StreamDone(Stream* stream);

  const uint64_t self_;
  ChannelFor channel_for_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The stream new proposals go to (null before the first, or after it
  // broke), and every stream not yet ended (each deletes itself).
  Stream* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::set<Stream*> live_ ABSL_GUARDED_BY(mu_);
};

// The leader's side: serves one Peer.Propose stream, proposing each entry
// through `node` and answering with its refusal or, from `state_machine`'s
// apply, its result. Entries over `max_entry_bytes` are refused.
grpc::ServerBidiReactor<internal::ForwardedProposals, internal::ProposalAcks>*
ServeForwardedProposals(raft::RaftNode* node, KvStateMachine* state_machine,
                        size_t max_entry_bytes);

}  // namespace lockd

#endif  // LOCKD_SERVER_FORWARDING_H_
