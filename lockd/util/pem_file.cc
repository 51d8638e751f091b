#include "lockd/util/pem_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace lockd {

absl::StatusOr<std::string> ReadPemFile(const std::string& flag,
                                        const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read ", flag, " ", path, ": ", std::strerror(errno)));
  }
  std::string bytes;
  bytes.assign(std::istreambuf_iterator<char>(in),
               std::istreambuf_iterator<char>());
  if (in.bad() || bytes.size() > kPemFileBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", flag, " ", path,
                     in.bad() ? ": read error" : ": larger than 1 MiB"));
  }
  return bytes;
}

}  // namespace lockd
