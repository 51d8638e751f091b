// Minimal leveled logging to stderr, one line per call, in the form
//   2026-11-23T10:00:00.123456Z I | server: ready to serve client requests
// Thread-safe: each line is written with a single write(2).
#ifndef LOCKD_UTIL_LOG_H_
#define LOCKD_UTIL_LOG_H_

#include <string>

#include "absl/strings/str_format.h"

namespace lockd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below `level` are dropped. Default: kInfo. Call before threads start.
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warn", "error". Returns false on anything else.
bool ParseLogLevel(const std::string& text, LogLevel* level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, const char* component, const std::string& msg);

template <typename... Args>
void Logf(LogLevel level, const char* component,
          const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (!LogEnabled(level)) return;
  LogLine(level, component, absl::StrFormat(format, args...));
}

}  // namespace lockd

#endif  // LOCKD_UTIL_LOG_H_
