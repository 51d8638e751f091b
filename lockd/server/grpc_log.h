// gRPC's own log lines (its library prints them to stderr in a format of
// its own) go through lockd's log instead, at lockd's levels and in its
// format. A refused TLS handshake, which gRPC reports as an error with
// OpenSSL's reason only, becomes a warning that says what the other side
// most likely did wrong and what fixes it.
#ifndef LOCKD_SERVER_GRPC_LOG_H_
#define LOCKD_SERVER_GRPC_LOG_H_

#include <string>

#include "lockd/util/log.h"

namespace lockd {

// Installs the routing. Call once, before gRPC is used.
void RouteGrpcLogs();

// What one gRPC log line becomes: its level and text (exposed for tests).
struct GrpcLogLine {
  LogLevel level;
  std::string text;
};
// `severity`: 0 debug, 1 info, 2 error (gRPC's gpr_log_severity).
GrpcLogLine TranslateGrpcLog(int severity, const std::string& file,
                             const std::string& message);

}  // namespace lockd

#endif  // LOCKD_SERVER_GRPC_LOG_H_
