// etcd v3 Lock (v3lockpb) on a member, served on the member the client
// called: the contender's key is written through raft (KvService::Txn, which
// forwards to the leader), and the wait for ownership runs here, on the local
// store, woken by applied deletions (lock::LockManager). So a hand-over costs
// one apply, not a client round trip, and any member can serve any waiter.
//
// Semantics are etcd 3.4's server-side mutex, with two deliberate changes:
// - a waiter whose key vanished while it waited (its lease expired or was
//   revoked) is never granted; its Lock fails with etcd 3.5's
//   "mutex: session is expired" (gRPC UNKNOWN, as etcd sends plain errors);
// - Lock requires a lease (etcd grants a 60 s lease nobody keeps alive).
// lockd does not keep the caller's lease alive while it waits (etcd's server
// does, for the duration of the call): the caller keeps its own lease alive,
// and a waiter that stops doing so loses its place instead of being granted.
// Like etcd, a Lock that ends by the client's deadline or
// cancellation deletes the caller's key (only if it is still the one this
// call created), so an abandoned waiter does not block the queue.
//
// Thread-safe; the referenced objects must outlive the service.
#ifndef LOCKD_SERVER_LOCK_SERVICE_H_
#define LOCKD_SERVER_LOCK_SERVICE_H_

#include <cstdint>
#include <string>

#include "lockd/lock/lock_manager.h"
#include "lockd/server/kv_service.h"
#include "v3lockpb/v3lock.grpc.pb.h"

namespace lockd {

// A contender's key after joining the queue of a lock or election.
struct Contender {
  std::string key;
  int64_t create_revision = 0;  // the fencing token once owner
  // The revision the txn that created or found the key produced/read: the
  // local store must reach it before deciding anything.
  int64_t min_revision = 0;
  std::string value;  // the key's value as found (election values)
  bool created = false;
  etcdserverpb::ResponseHeader header;
};

// Creates name/<lease hex> with `value` and `lease` unless it exists (one
// txn through raft). Errors are the txn's (e.g. lease not found).
grpc::Status JoinQueue(KvService* kv, grpc::ServerContext* ctx,
                       const std::string& name, int64_t lease,
                       const std::string& value, Contender* out);
// Waits until the contender owns the name; `*revision` is the revision at
// which ownership was observed. `lost_message` is the error text for a
// contender whose key vanished. On the client's deadline or cancellation
// the key is deleted if still the contender's (as etcd does).
grpc::Status WaitForTurn(KvService* kv, lock::LockManager* locks,
                         grpc::ServerContext* ctx, const std::string& name,
                         const Contender& c, const std::string& lost_message,
                         int64_t* revision);
// Deletes `key` if its create revision is still `create_revision`; uses its
// own deadline (the caller's may have passed). Errors are the txn's.
grpc::Status DeleteIfCreatedAt(KvService* kv, const std::string& key,
                               int64_t create_revision,
                               etcdserverpb::TxnResponse* resp);

class LockService final : public v3lockpb::Lock::Service {
 public:
  LockService(KvService* kv, lock::LockManager* locks)
      : kv_(kv), locks_(locks) {}

  grpc::Status Lock(grpc::ServerContext* ctx, const v3lockpb::LockRequest* req,
                    v3lockpb::LockResponse* resp) override;
  grpc::Status Unlock(grpc::ServerContext* ctx,
                      const v3lockpb::UnlockRequest* req,
                      v3lockpb::UnlockResponse* resp) override;

 private:
  KvService* kv_;
  lock::LockManager* locks_;
};

}  // namespace lockd

#endif  // LOCKD_SERVER_LOCK_SERVICE_H_
