#include "lockd/ctl/command.h"

#include <cstdio>

namespace lockd::ctl {

int Fail(const std::string& message) {
  std::fprintf(stderr, "Error: %s\n", message.c_str());
  return 1;
}

}  // namespace lockd::ctl
