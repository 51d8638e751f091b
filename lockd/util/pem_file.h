// Reading the PEM file a TLS flag names (certificates, keys, CA bundles),
// for the member's flags and lockctl's alike.
#ifndef LOCKD_UTIL_PEM_FILE_H_
#define LOCKD_UTIL_PEM_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace lockd {

// Files larger than this are not certificates or keys.
inline constexpr size_t kPemFileBytesMax = 1 << 20;

// The whole of `path`, given by `flag` (e.g. "--cacert"). Errors:
// kInvalidArgument naming the flag and the file ("cannot read --cacert
// ca.crt: No such file or directory"), also for a file over
// kPemFileBytesMax.
absl::StatusOr<std::string> ReadPemFile(const std::string& flag,
                                        const std::string& path);

}  // namespace lockd

#endif  // LOCKD_UTIL_PEM_FILE_H_
