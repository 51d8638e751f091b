// What lockctl's commands share: the global flags as each command gets them,
// the error line, and the commands that live in their own files.
#ifndef LOCKD_CTL_COMMAND_H_
#define LOCKD_CTL_COMMAND_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lockd/util/keys.h"

namespace lockd::ctl {

// The global flags, parsed.
struct CommandContext {
  std::vector<std::string> endpoints;
  std::string write_out = "simple";
  absl::Duration dial_timeout = absl::Seconds(2);
  absl::Duration command_timeout = absl::Seconds(5);
};

// Prints "Error: <message>" (etcdctl's form) to stderr; returns exit status 1.
int Fail(const std::string& message);

// The key just past every key with this prefix (etcd's GetPrefixRangeEnd).
using ::lockd::PrefixEnd;

// Commands in their own files; each returns the process exit status.
// lease_cmd.cc: "grant", "revoke", "timetolive", "list", "keep-alive".
int RunLeaseCommand(const std::string& command, const CommandContext& g,
                    const std::vector<std::string>& in);
// lock_cmd.cc: "lock" or "elect".
int RunLockCommand(const std::string& command, const CommandContext& g,
                   const std::vector<std::string>& in);
// cluster_cmd.cc: "cluster resize".
int RunClusterResize(const CommandContext& g,
                     const std::vector<std::string>& in);

}  // namespace lockd::ctl

#endif  // LOCKD_CTL_COMMAND_H_
