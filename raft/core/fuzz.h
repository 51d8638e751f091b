// A seeded random driver feeding arbitrary and malformed messages (unknown
// senders, stale and future terms, out-of-range indexes, corrupt entries and
// snapshots, messages from removed nodes) to a small cluster, checking that
// nothing crashes and every node's invariants hold after every input.
// GCC has no libFuzzer, so coverage comes from volume: the cc_test runs a
// bounded number of iterations, the raft_fuzz binary runs as long as asked.
#ifndef LOCKD_RAFT_CORE_FUZZ_H_
#define LOCKD_RAFT_CORE_FUZZ_H_

#include <cstdint>

namespace lockd::raft::fuzz {

struct FuzzStats {
  uint64_t messages = 0;
  uint64_t rejected = 0;             // refused by RawNode::Step's validation
  uint64_t protocol_violations = 0;  // dropped by the core as malformed
};

// Runs one iteration of `steps` random inputs derived from `seed`.
// RAFT_CHECK-fails (aborts) on a broken invariant.
FuzzStats RunFuzzIteration(uint64_t seed, int steps);

}  // namespace lockd::raft::fuzz

#endif  // LOCKD_RAFT_CORE_FUZZ_H_
