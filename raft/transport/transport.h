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
// Snapshots travel apart from the message stream, on one
// `RaftTransport.SendSnapshot` call each: a MsgSnap handed to Send() starts
// a sender thread that asks the SnapshotIo for the image (e.g. a fresh
// checkpoint of the store) and streams it in chunks of at most
// `snapshot_chunk_bytes`. Each Write waits for gRPC flow control, so a slow
// receiver slows the sender instead of filling memory. At most one snapshot
// is in flight per peer and `snapshot_sends_max` in all; the outcome of each
// (also an immediate refusal) is reported through TakeSnapshotReports() for
// RawNode::ReportSnapshot. The receiver hands the chunks to its SnapshotIo,
// which verifies the image; only then is the MsgSnap delivered, with
// `snapshot.data` replaced by the receiver's local descriptor of the image.
// MsgSnap arriving on the message stream is refused, so a peer can never
// make a member install anything that did not come through SendSnapshot.
//
// Thread safety: all public methods are thread-safe.
#ifndef LOCKD_RAFT_TRANSPORT_TRANSPORT_H_
#define LOCKD_RAFT_TRANSPORT_TRANSPORT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/util/metrics.h"
#include "raft/core/types.h"

namespace grpc {
class ChannelCredentials;
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

// The leader side of one snapshot send: the image's bytes, in order.
// Destroying it releases whatever it holds (temporary files).
class SnapshotSource {
 public:
  virtual ~SnapshotSource() = default;
  virtual uint64_t total_bytes() const = 0;
  // Appends up to `max_bytes` to `*out`; false once the end is reached.
  virtual absl::StatusOr<bool> Next(size_t max_bytes, std::string* out) = 0;
};

// The follower side of one snapshot receive. Destroying it without a
// successful Finish() discards what was written.
class SnapshotSink {
 public:
  virtual ~SnapshotSink() = default;
  // The next bytes of the image. Errors end the transfer.
  virtual absl::Status Write(absl::string_view bytes) = 0;
  // Verifies the whole image and returns its local descriptor (what the
  // delivered MsgSnap carries in snapshot.data). From then on the image
  // belongs to whoever consumes the message. kDataLoss if it is damaged.
  virtual absl::StatusOr<std::string> Finish() = 0;
};

// Where snapshot images come from and go to. Called on transport threads,
// concurrently; implementations must be thread-safe.
class SnapshotIo {
 public:
  virtual ~SnapshotIo() = default;
  // Opens the image to send with MsgSnap `m`. May take a while (it makes a
  // checkpoint); runs on the snapshot's own sender thread.
  virtual absl::StatusOr<std::unique_ptr<SnapshotSource>> OpenSource(
      const Message& m) = 0;
  // Starts receiving the image of MsgSnap `m`.
  virtual absl::StatusOr<std::unique_ptr<SnapshotSink>> OpenSink(
      const Message& m) = 0;
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
  // Snapshot transfers: chunk size, concurrent sends (in all) and receives,
  // the time one transfer may take, and the largest image accepted.
  size_t snapshot_chunk_bytes = 1 << 20;
  int snapshot_sends_max = 2;
  int snapshot_receives_max = 2;
  absl::Duration snapshot_timeout = absl::Minutes(10);
  uint64_t snapshot_bytes_max = uint64_t{64} << 30;
  // Where etcd's peer traffic metrics go (etcd_network_peer_sent_bytes_total
  // and _received_bytes_total, _sent_failures_total, per peer;
  // etcd_server_heartbeat_send_failures_total). Null: none. Must outlive
  // the transport.
  metrics::Registry* metrics = nullptr;
  // How every connection to a peer is secured (the message streams and
  // snapshot sends): e.g. grpc::SslCredentials when the peer URLs are
  // https. Null: insecure.
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials;
};

class Transport {
 public:
  // `snapshots` (may be null: then MsgSnap sends are reported failed and
  // receives refused) must outlive the transport.
  Transport(const TransportOptions& options, MessageHandler* handler,
            SnapshotIo* snapshots = nullptr);
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
  // Outcomes of snapshot sends finished since the last call: (peer, success).
  std::vector<std::pair<uint64_t, bool>> TakeSnapshotReports();

  // Stops all senders and rejects further inbound streams. Idempotent.
  void Stop();

  struct PeerStats {
    uint64_t sent = 0;     // messages written to the stream
    uint64_t dropped = 0;  // messages dropped (queue full or send failed)
    uint64_t connects = 0;
    bool connected = false;
  };
  PeerStats Stats(uint64_t id) const;

  struct SnapshotStats {
    uint64_t sent = 0;           // sends the receiver acknowledged
    uint64_t send_failures = 0;  // sends that failed or were refused
    uint64_t received = 0;       // images verified and delivered
    uint64_t receive_failures = 0;
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
  };
  SnapshotStats snapshot_stats() const;

 private:
  class Peer;
  class Service;
  struct SnapshotSend;
  void MarkUnreachable(uint64_t id);
  // Starts sending MsgSnap `m`, or reports it failed. Requires mu_.
  void StartSnapshotSend(Message m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunSnapshotSend(SnapshotSend* send);
  // Joins finished senders. Requires mu_ not held.
  void ReapSnapshotSends();
  void CountReceive(bool ok, uint64_t bytes);
  // The received-bytes counter of peer `from`, or null without metrics.
  metrics::Counter* ReceivedBytes(uint64_t from);

  TransportOptions options_;
  MessageHandler* handler_;
  std::unique_ptr<Service> service_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> unreachable_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  SnapshotIo* snapshots_;
  // Snapshot sends in flight (and finished ones not yet joined), by peer.
  std::map<uint64_t, std::unique_ptr<SnapshotSend>> snapshot_sends_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, bool>> snapshot_reports_ ABSL_GUARDED_BY(mu_);
  SnapshotStats snapshot_stats_ ABSL_GUARDED_BY(mu_);
  metrics::Counter* heartbeat_send_failures_ = nullptr;  // set once
};

}  // namespace lockd::raft

#endif  // LOCKD_RAFT_TRANSPORT_TRANSPORT_H_
