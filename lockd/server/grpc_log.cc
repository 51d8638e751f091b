#include "lockd/server/grpc_log.h"

#include <grpc/support/log.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace lockd {
namespace {

// OpenSSL's reasons for a failed handshake, and what usually causes each.
struct HandshakeHint {
  const char* reason;
  const char* hint;
};

constexpr HandshakeHint kHandshakeHints[] = {
    {"wrong version number",
     "the other side does not speak TLS: it dialed an https:// URL as "
     "http://, or a client was given no --cacert"},
    {"http request",
     "plain HTTP reached a TLS port; over an https:// client URL only gRPC "
     "is served, so point HTTP probes at --listen-metrics-urls "
     "(http://) instead"},
    {"peer did not return a certificate",
     "the other side sent no certificate, which --client-cert-auth (or "
     "--peer-client-cert-auth) requires; give the client --cert and --key"},
    {"certificate verify failed",
     "the other side's certificate is not signed by --trusted-ca-file (or "
     "--peer-trusted-ca-file), or has expired"},
    {"unknown ca",
     "the other side does not trust this member's certificate; give it the "
     "CA that signed --cert-file (etcdctl: --cacert)"},
    {"bad certificate",
     "the other side refused this member's certificate; check that its "
     "names cover the address dialed and that it has not expired"},
    {"certificate expired",
     "a certificate has expired; renew it and restart whoever uses it"},
};

constexpr char kHandshakeFailed[] = "Handshake failed";

void Route(gpr_log_func_args* args) {
  if (args == nullptr || args->message == nullptr) return;
  GrpcLogLine line =
      TranslateGrpcLog(static_cast<int>(args->severity),
                       args->file == nullptr ? "" : args->file, args->message);
  if (LogEnabled(line.level)) LogLine(line.level, "grpc", line.text);
}

}  // namespace

GrpcLogLine TranslateGrpcLog(int severity, const std::string& file,
                             const std::string& message) {
  if (absl::StartsWith(message, kHandshakeFailed)) {
    // "Handshake failed with fatal error SSL_ERROR_SSL: error:0A00010B:SSL
    // routines::wrong version number."
    absl::string_view reason = message;
    if (size_t colon = reason.rfind(':'); colon != absl::string_view::npos) {
      reason = reason.substr(colon + 1);
    }
    reason = absl::StripAsciiWhitespace(absl::StripSuffix(reason, "."));
    std::string text = absl::StrCat(
        "rejected a connection: TLS handshake failed (", reason, ")");
    for (const HandshakeHint& h : kHandshakeHints) {
      if (absl::StrContains(reason, h.reason)) {
        absl::StrAppend(&text, ": ", h.hint);
        break;
      }
    }
    return {LogLevel::kWarning, text};
  }
  LogLevel level = severity >= 2   ? LogLevel::kError
                   : severity == 1 ? LogLevel::kInfo
                                   : LogLevel::kDebug;
  absl::string_view base = file;
  if (size_t slash = base.rfind('/'); slash != absl::string_view::npos) {
    base = base.substr(slash + 1);
  }
  return {level,
          base.empty() ? message : absl::StrCat(message, " (", base, ")")};
}

void RouteGrpcLogs() { gpr_set_log_function(&Route); }

}  // namespace lockd
