// Require-leader for the synchronous gRPC streams a member serves
// (Election Observe): a member that has had no leader for a while ends them
// with etcd's "etcdserver: no leader" (gRPC UNAVAILABLE), as etcd ends
// streams whose client asked for a leader, so no client stays on a member
// cut off from the cluster; it reconnects to another member. (Watch and
// LeaseKeepAlive streams use the callback API and are ended by their
// services: WatchService::EndAll, LeaseService::EndKeepAlives.)
//
// A synchronous handler blocked in a stream Read cannot be woken without
// cancelling the call, and ServerContext::TryCancel would send the client a
// bare CANCELLED. EndAll instead cancels the call with a status
// (grpc_call_cancel_with_status): the transport sends that status as the
// call's trailers, the handler's pending Read fails and IsCancelled() turns
// true, and whatever the handler returns afterwards is ignored.
//
// Thread-safe.
#ifndef LOCKD_SERVER_REQUIRE_LEADER_H_
#define LOCKD_SERVER_REQUIRE_LEADER_H_

#include <grpcpp/grpcpp.h>

#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lockd {

class RequireLeaderStreams {
 public:
  RequireLeaderStreams() = default;
  RequireLeaderStreams(const RequireLeaderStreams&) = delete;
  RequireLeaderStreams& operator=(const RequireLeaderStreams&) = delete;

  // Keeps one stream registered for its lifetime. Create it at the start of
  // the handler, on the handler's thread; it must be destroyed before the
  // handler returns (the ServerContext's call must still exist while it is
  // registered). A null registry registers nothing.
  class Registration {
   public:
    Registration(RequireLeaderStreams* streams, grpc::ServerContext* ctx);
    ~Registration();
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;

   private:
    RequireLeaderStreams* streams_;
    grpc::ServerContext* ctx_;
  };

  // Ends every registered stream with `code` and `message` and forgets it;
  // returns how many. A stream that had already ended is unaffected (gRPC
  // keeps a call's first status).
  int EndAll(grpc::StatusCode code, const std::string& message);

  int open_streams() const;

 private:
  mutable absl::Mutex mu_;
  std::set<grpc::ServerContext*> contexts_ ABSL_GUARDED_BY(mu_);
};

// Ends the call of a synchronous handler with `code` and `message` now, even
// while the handler is blocked in a Read. Call it only while the handler
// runs (the call must exist). Thread-safe.
void EndCall(grpc::ServerContext* ctx, grpc::StatusCode code,
             const std::string& message);

}  // namespace lockd

#endif  // LOCKD_SERVER_REQUIRE_LEADER_H_
