// CHECK-style assertions for the Raft core. A broken invariant or an illegal
// transition crashes the process loudly; it is never returned as a status.
#ifndef LOCKD_RAFT_CORE_CHECK_H_
#define LOCKD_RAFT_CORE_CHECK_H_

#include <string>

#include "absl/base/optimization.h"
#include "absl/strings/str_format.h"

namespace lockd::raft::internal {

[[noreturn]] void CheckFailed(const char* file, int line, const char* cond,
                              const std::string& msg);

}  // namespace lockd::raft::internal

// RAFT_CHECK(cond, format, args...): always on.
#define RAFT_CHECK(cond, ...)                                             \
  do {                                                                    \
    if (ABSL_PREDICT_FALSE(!(cond))) {                                    \
      ::lockd::raft::internal::CheckFailed(__FILE__, __LINE__, #cond,     \
                                           absl::StrFormat(__VA_ARGS__)); \
    }                                                                     \
  } while (0)

#define RAFT_FATAL(...)                                             \
  ::lockd::raft::internal::CheckFailed(__FILE__, __LINE__, "fatal", \
                                       absl::StrFormat(__VA_ARGS__))

#endif  // LOCKD_RAFT_CORE_CHECK_H_
