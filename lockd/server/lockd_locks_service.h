// lockd.v1.Locks (proto/lockdpb/lockd.proto): what etcd's Lock service
// lacks, on the same machinery (lock_service.h): a contender's key
// name/<lease hex> written through raft, the wait on the local store.
// - TryLock waits at most wait_timeout_ms (0: a single check); on timeout
//   it removes its key and answers acquired=false (not an error). SHARED
//   holders coexist; an EXCLUSIVE one holds alone; the queue is fair (a
//   reader queued behind a writer waits for it).
// - AcquireSemaphore: the `limit` oldest keys hold.
// - The fencing token is the key's create revision: unique, and growing in
//   grant order per name (a waiter's turn only depends on older keys).
// - Release deletes the key (only if its create revision is still
//   fencing_token, when given); ListHolders reads linearizably.
// The key's value records the mode ("exclusive", "shared", "semaphore:N").
// All callers of one name must use the same kind (lock or semaphore with
// one limit). Thread-safe; referenced objects must outlive the service.
#ifndef LOCKD_SERVER_LOCKD_LOCKS_SERVICE_H_
#define LOCKD_SERVER_LOCKD_LOCKS_SERVICE_H_

#include "lockd/lock/lock_manager.h"
#include "lockd/server/kv_service.h"
#include "lockdpb/lockd.grpc.pb.h"

namespace lockd {

class LockdLocksService final : public lockd::v1::Locks::Service {
 public:
  LockdLocksService(KvService* kv, lock::LockManager* locks)
      : kv_(kv), locks_(locks) {}

  grpc::Status TryLock(grpc::ServerContext* ctx, const v1::TryLockRequest* req,
                       v1::TryLockResponse* resp) override;
  grpc::Status AcquireSemaphore(grpc::ServerContext* ctx,
                                const v1::AcquireSemaphoreRequest* req,
                                v1::AcquireSemaphoreResponse* resp) override;
  grpc::Status Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* resp) override;
  grpc::Status ListHolders(grpc::ServerContext* ctx,
                           const v1::ListHoldersRequest* req,
                           v1::ListHoldersResponse* resp) override;

 private:
  // Joins and waits; *acquired false on the wait timeout (key removed).
  grpc::Status Acquire(grpc::ServerContext* ctx, const std::string& name,
                       int64_t lease, int64_t wait_timeout_ms,
                       const std::string& value, const lock::Rule& rule,
                       bool* acquired, std::string* key, uint64_t* token,
                       etcdserverpb::ResponseHeader* header);

  KvService* kv_;
  lock::LockManager* locks_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_LOCKD_LOCKS_SERVICE_H_
