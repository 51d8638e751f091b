// lockctl watch: etcdctl's watch command (see watch_cmd.cc).
#ifndef LOCKD_CTL_WATCH_CMD_H_
#define LOCKD_CTL_WATCH_CMD_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lockd/client/client.h"

namespace lockd::ctl {

// `lockctl watch KEY [RANGE_END] [--prefix] [--rev N] [--prev-kv]
// [--progress-notify]`: prints events as they come until interrupted, as
// etcdctl does. Returns the exit status.
int WatchCommand(const std::string& endpoints, const std::string& write_out,
                 absl::Duration dial_timeout, const client::TlsOptions& tls,
                 const std::vector<std::string>& args);

}  // namespace lockd::ctl

#endif  // LOCKD_CTL_WATCH_CMD_H_
