// Restoring a snapshot file (Maintenance.Snapshot's stream, as `lockctl
// snapshot save` writes it) into the data directory of a member of a new
// cluster, as `etcdutl snapshot restore` does for etcd: the keys, their
// revisions and history, leases and alarms come from the snapshot; the
// membership, member and cluster IDs come from the flags given, and the raft
// log starts afresh. Each member of the new cluster gets its own data
// directory from the same file, and then starts from it like any member
// restarting (its --initial-cluster* flags are ignored from then on).
#ifndef LOCKD_SERVER_RESTORE_H_
#define LOCKD_SERVER_RESTORE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lockd/server/config.h"

namespace lockd {

// What a snapshot holds, as `snapshot status` shows it.
struct SnapshotSummary {
  int64_t revision = 0;
  int64_t compact_revision = 0;
  uint32_t hash = 0;  // MvccStore::HashKV at `revision` (what HashKV answers)
  int64_t total_keys = 0;    // keys live at `revision`
  uint64_t total_bytes = 0;  // the file's size
};

// Called as the snapshot is read: bytes done so far and the file's size.
using RestoreProgress = std::function<void(uint64_t done, uint64_t total)>;

// Fills `config.data_dir` (which must not exist, or be empty: a mounted
// volume, say) with the snapshot's data and a new raft log for the cluster
// `config` describes (validated with ValidateConfig). The member's files
// appear whole or not at all: they are built in <data_dir>/member.restoring
// and renamed to <data_dir>/member at the end (a leftover of an interrupted
// restore is removed first). Errors: kFailedPrecondition (the data
// directory has files), kDataLoss (the file is damaged or not a snapshot),
// kNotFound (no such file), kInternal (I/O).
absl::StatusOr<SnapshotSummary> RestoreSnapshot(
    const std::string& path, ServerConfig config,
    const RestoreProgress& progress);

// Reads a snapshot file (verifying it whole) and summarizes it, unpacking it
// into a temporary directory under `scratch_dir` that is removed again.
// Errors as RestoreSnapshot's.
absl::StatusOr<SnapshotSummary> SummarizeSnapshot(
    const std::string& path, const std::string& scratch_dir,
    const RestoreProgress& progress);

}  // namespace lockd

#endif  // LOCKD_SERVER_RESTORE_H_
