#include "lockd/server/require_leader.h"

#include <grpc/grpc.h>

namespace lockd {

RequireLeaderStreams::Registration::Registration(RequireLeaderStreams* streams,
                                                 grpc::ServerContext* ctx)
    : streams_(streams), ctx_(ctx) {
  if (streams_ == nullptr) return;
  absl::MutexLock lock(&streams_->mu_);
  streams_->contexts_.insert(ctx_);
}

RequireLeaderStreams::Registration::~Registration() {
  if (streams_ == nullptr) return;
  absl::MutexLock lock(&streams_->mu_);
  streams_->contexts_.erase(ctx_);
}

int RequireLeaderStreams::EndAll(grpc::StatusCode code,
                                 const std::string& message) {
  // Under the lock: a registered context's call stays alive until its
  // handler unregisters, which waits for the lock.
  // An ended stream leaves the set at once, so it is counted (and
  // cancelled) once however long its handler takes to return.
  absl::MutexLock lock(&mu_);
  const int ended = static_cast<int>(contexts_.size());
  for (grpc::ServerContext* ctx : contexts_) EndCall(ctx, code, message);
  contexts_.clear();
  return ended;
}

void EndCall(grpc::ServerContext* ctx, grpc::StatusCode code,
             const std::string& message) {
  (void)grpc_call_cancel_with_status(ctx->c_call(),
                                     static_cast<grpc_status_code>(code),
                                     message.c_str(), nullptr);
}

int RequireLeaderStreams::open_streams() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(contexts_.size());
}

}  // namespace lockd
