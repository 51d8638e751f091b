// Client workloads for tests that change a cluster under load (resize_test,
// reconfig_test): each records every call's duration and outcome, and the
// writes that were acknowledged, in a Tally.
#ifndef LOCKD_TESTS_HARNESS_WORKLOAD_H_
#define LOCKD_TESTS_HARNESS_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/client/client.h"

namespace lockd::testing {

// What one client saw. Thread-safe.
struct Tally {
  absl::Mutex mu;
  std::map<std::string, std::string> acked ABSL_GUARDED_BY(mu);
  std::vector<std::string> failures ABSL_GUARDED_BY(mu);
  absl::Duration longest ABSL_GUARDED_BY(mu);
  std::string longest_what ABSL_GUARDED_BY(mu);
  int64_t calls ABSL_GUARDED_BY(mu) = 0;

  // One call: `what` it was, how long it `took`, and how it ended.
  void Call(const std::string& what, absl::Duration took,
            const absl::Status& s);
  void Acked(const std::string& key, const std::string& value);
  int64_t Calls();
  // The first few failures, one a line.
  std::string FirstFailures(size_t n = 5);
};

// lockd's client until `stop`: put PREFIX + i, then read it back
// linearizably (a read that misses the acknowledged put is a failure).
// Records the most endpoints the client balanced over in `most_endpoints`.
void LockdPutGetLoop(client::Client* c, const std::string& prefix,
                     const std::atomic<bool>* stop, Tally* t,
                     std::atomic<size_t>* most_endpoints);

// Debian's etcdctl with a static endpoint list until `stop`: put PREFIX + i,
// then a linearizable get of it.
void EtcdctlPutGetLoop(const std::string& endpoints, const std::string& prefix,
                       const std::atomic<bool>* stop, Tally* t);

// Waits until `t` has made `more` calls beyond now (at most `timeout`).
void LetRun(Tally* t, int64_t more, absl::Duration timeout = absl::Seconds(20));

}  // namespace lockd::testing

#endif  // LOCKD_TESTS_HARNESS_WORKLOAD_H_
