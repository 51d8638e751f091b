// A cluster's event history, read as etcd offers it: a watch from an old
// revision on one member, over a single stream (no failover, no client
// library), for checking what watchers were delivered.
#ifndef LOCKD_TESTS_HARNESS_HISTORY_H_
#define LOCKD_TESTS_HARNESS_HISTORY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lockd/util/keys.h"
#include "mvccpb/kv.pb.h"

namespace lockd::testing {

// One event as a comparable line: "PUT key=value @rev" / "DELETE key @rev".
std::string EventLine(const mvccpb::Event& e);

// The events on [key, range_end) with revisions in [from_revision,
// to_revision], in order, from the member at `endpoint` ("host:port").
// `to_revision` must be the revision of a write in the range (e.g. a marker
// put): reading ends at its event. Errors: kDeadlineExceeded if the member
// did not deliver up to `to_revision` within `timeout`; the member's error
// otherwise.
absl::StatusOr<std::vector<mvccpb::Event>> ReadHistory(
    const std::string& endpoint, const std::string& key,
    const std::string& range_end, int64_t from_revision, int64_t to_revision,
    absl::Duration timeout = absl::Seconds(30));

// The end of the range of keys starting with `prefix` (etcd's prefix end).
using ::lockd::PrefixEnd;

}  // namespace lockd::testing

#endif  // LOCKD_TESTS_HARNESS_HISTORY_H_
