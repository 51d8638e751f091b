// Snapshot images of the key-value store for the raft transport.
//
// Sending (leader): each send takes a fresh RocksDB checkpoint of the store
// into <dir>/send-<n> and streams it as an archive (kv/snapshot/archive.h:
// file by file, SHA-256 trailer); the checkpoint is removed when the send
// ends, whatever its outcome.
//
// Receiving (follower): chunks are unpacked as they arrive into the staging
// directory <dir>/recv-<from>-<index>-<n> (each file fsynced). Nothing there
// is trusted until Finish() has checked the archive's trailer; then the
// directory is synced and its path becomes the MsgSnap's snapshot.data. The
// node hands it to KvStateMachine::Restore, which moves it into the store
// (MvccStore::Restore), and then to DiscardSnapshot, which removes whatever
// is left. A receive that fails or is abandoned removes its directory.
//
// Crash safety: the staging directory lives on the same file system as the
// store (both under <data-dir>/member) so the install is a rename. Anything
// under <dir> after a crash is garbage: the constructor removes it, before
// the transport can receive anything.
//
// Thread-safe.
#ifndef LOCKD_SERVER_SNAPSHOT_IO_H_
#define LOCKD_SERVER_SNAPSHOT_IO_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "kv/mvcc/store.h"
#include "raft/transport/transport.h"

namespace lockd {

class StoreSnapshotIo final : public raft::SnapshotIo {
 public:
  // `dir` is created if missing and emptied; `store` must outlive this.
  StoreSnapshotIo(std::string dir, kv::MvccStore* store);

  absl::StatusOr<std::unique_ptr<raft::SnapshotSource>> OpenSource(
      const raft::Message& m) override;
  absl::StatusOr<std::unique_ptr<raft::SnapshotSink>> OpenSink(
      const raft::Message& m) override;

  const std::string& dir() const { return dir_; }

 private:
  const std::string dir_;
  kv::MvccStore* const store_;
  std::atomic<uint64_t> seq_{0};
};

}  // namespace lockd

#endif  // LOCKD_SERVER_SNAPSHOT_IO_H_
