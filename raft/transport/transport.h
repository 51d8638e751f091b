// Raft peer transport over gRPC: each member streams message batches to each
// peer on one long-lived `RaftTransport.Stream` call.
//
// Sending never blocks the caller (the node loop): messages go into a
// bounded per-peer queue drained by that peer's sender thread, which batches
// them (up to `batch_bytes_max`), reconnects with jittered exponential
// backoff, and drops what it cannot deliver. Raft tolerates loss; the node
// learns of it from TakeUnreachable() and reports it to the core so the
// leader probes the peer again instead of pipelining into the void.
//
// Receiving: batches from another cluster (cluster ID mismatch) or from a
// member the handler rejects (e.g. removed) end the stream with an error the
// sender logs; accepted messages go to the handler on a gRPC thread.
//
// Thread safety: all public methods are thread-safe.
#ifndef LOCKD_RAFT_TRANSPORT_TRANSPORT_H_
#define LOCKD_RAFT_TRANSPORT_TRANSPORT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "raft/core/types.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace lockd::raft {

// What the transport hands inbound traffic to. Called from gRPC threads,
// concurrently; implementations must be thread-safe and must not block for
// long (enqueue and return).
class MessageHandler {
 public:
  virtual ~MessageHandler() = default;
  // OK to accept traffic from member `from`; an error (e.g.
  // kPermissionDenied for a removed member) is returned to the sender.
  virtual absl::Status CheckPeer(uint64_t from) = 0;
  virtual void Deliver(std::vector<Message> messages) = 0;
};

struct TransportOptions {
  uint64_t cluster_id = 0;
  uint64_t self_id = 0;
  // Per-peer queue bounds; beyond them new messages are dropped.
  size_t queue_messages_max = 4096;
  uint64_t queue_bytes_max = 64 << 20;
  // Upper bound of one batch's entry payload.
  uint64_t batch_bytes_max = 4 << 20;
  absl::Duration backoff_min = absl::Milliseconds(50);
  absl::Duration backoff_max = absl::Seconds(2);
  absl::Duration dial_timeout = absl::Seconds(1);
  // Seeds the backoff jitter.
  uint64_t seed = 1;
};

class Transport {
 public:
  Transport(const TransportOptions& options, MessageHandler* handler);
  ~Transport();  // Stop()s
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // The gRPC service to register on the member's peer server. Owned by the
  // transport; valid until destruction.
  grpc::Service* service();

  // Starts (or re-targets) the sender for peer `id` at `address`
  // ("host:port"). Adding an existing peer with a new address reconnects.
  void AddPeer(uint64_t id, const std::string& address);
  // Stops the sender and drops its queue.
  void RemovePeer(uint64_t id);

  // Queues each message for its `to` peer. Messages for unknown peers and
  // those over a full queue are dropped and the peer counted unreachable.
  void Send(std::vector<Message> messages);
  // Peers that dropped messages or lost their connection since the last
  // call.
  std::vector<uint64_t> TakeUnreachable();

  // Stops all senders and rejects further inbound streams. Idempotent.
  void Stop();

  struct PeerStats {
    uint64_t sent = 0;     // messages written to the stream
    uint64_t dropped = 0;  // messages dropped (queue full or send failed)
    uint64_t connects = 0;
    bool connected = false;
  };
  PeerStats Stats(uint64_t id) const;

 private:
  class Peer;
  class Service;
  void MarkUnreachable(uint64_t id);

  TransportOptions options_;
  MessageHandler* handler_;
  std::unique_ptr<Service> service_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> unreachable_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_TRANSPORT_TRANSPORT_H_
