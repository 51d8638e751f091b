// What lockctl's commands share: the global flags as each command gets them,
// the error line, and the commands that live in their own files.
#ifndef LOCKD_CTL_COMMAND_H_
#define LOCKD_CTL_COMMAND_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lockd/client/client.h"
#include "lockd/util/flags.h"
#include "lockd/util/keys.h"

namespace lockd::ctl {

// The global flags, parsed.
struct CommandContext {
  std::vector<std::string> endpoints;
  std::string write_out = "simple";
  absl::Duration dial_timeout = absl::Seconds(2);
  absl::Duration command_timeout = absl::Seconds(5);
  // --cacert, --cert, --key.
  client::TlsOptions tls;
};

// Prints "Error: <message>" (etcdctl's form) to stderr; returns exit status 1.
int Fail(const std::string& message);

// Parses a command's flags from `in`; the positional arguments go to
// `*args`. On a bad flag, prints the error and returns false.
bool ParseCommandFlags(FlagSet& fs, const std::vector<std::string>& in,
                       std::vector<std::string>* args);

// Progress of a long transfer on stderr, "<what>: 1.2 MB / 3.4 MB (35%)":
// redrawn in place on a terminal, a line per tenth otherwise.
class ProgressLine {
 public:
  explicit ProgressLine(std::string what);
  void Update(uint64_t done, uint64_t total);
  // Ends a line redrawn in place.
  void Finish();

 private:
  std::string what_;
  bool tty_;
  int last_tenth_ = -1;
  bool drawn_ = false;
};

// The key just past every key with this prefix (etcd's GetPrefixRangeEnd).
using ::lockd::PrefixEnd;

// Commands in their own files; each returns the process exit status.
// lease_cmd.cc: "grant", "revoke", "timetolive", "list", "keep-alive".
int RunLeaseCommand(const std::string& command, const CommandContext& g,
                    const std::vector<std::string>& in);
// lock_cmd.cc: "lock" or "elect".
int RunLockCommand(const std::string& command, const CommandContext& g,
                   const std::vector<std::string>& in);
// snapshot_cmd.cc: "restore" or "status" (offline: no endpoints).
int RunSnapshotCommand(const std::string& command, const CommandContext& g,
                       const std::vector<std::string>& in);
// cluster_cmd.cc: "cluster resize".
int RunClusterResize(const CommandContext& g,
                     const std::vector<std::string>& in);

}  // namespace lockd::ctl

#endif  // LOCKD_CTL_COMMAND_H_
