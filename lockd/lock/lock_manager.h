// Lock and election waiting on top of the replicated key-value store.
//
// A lock (or an election) named N is the set of keys under the prefix "N/";
// each contender owns one key, "N/<lease id in hex>", attached to its lease.
// The owner is the key with the lowest create revision, and that revision is
// the fencing token: a later owner's key was necessarily created later, so
// tokens only grow. The keys are written through raft by the caller (the gRPC
// services); this class only *waits*: it reads the member's local store and
// learns about committed changes from the state machine's commit hook, so a
// hand-over to the next waiter happens on the member where it waits as soon
// as the predecessor's deletion is applied there, with no client round trip.
//
// Safety rule (Jepsen found etcd 3.4.3 granting on expired leases): ownership
// is decided by ONE read at ONE revision which must show both that the
// waiter's own key still exists with the create revision it was given and
// that no key under the prefix has a smaller create revision. A waiter whose
// key vanished (lease expired or revoked, key deleted) is told so and is
// never granted.
//
// Depends on kv only (no raft, no gRPC): the caller passes its deadline and
// a cancellation probe.
//
// Thread safety: OnCommit/OnRestore run on the apply thread and never block
// on a waiter; every other method may be called from any thread.
#ifndef LOCKD_LOCK_LOCK_MANAGER_H_
#define LOCKD_LOCK_LOCK_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kv/mvcc/store.h"
#include "lockd/util/keys.h"
#include "mvccpb/kv.pb.h"

namespace lockd::lock {

// "name/" — the prefix under which a lock's or an election's keys live.
std::string Prefix(const std::string& name);
// name + "/" + the lease id in lowercase hex, as etcd's recipes name it.
std::string OwnerKey(const std::string& name, int64_t lease);
// The end of the range holding every key that starts with `prefix`.
using ::lockd::PrefixEnd;

struct Limits {
  // Waiting calls (Lock, Campaign, Observe) per name and in all.
  size_t waiters_per_name_max = 4096;
  size_t waiters_max = 65536;
};

// How long one waiting call may wait: until `deadline`, or until
// `cancelled()` says the client went away (polled every few tens of ms,
// since gRPC's synchronous API has no cancellation callback).
struct WaitScope {
  absl::Time deadline = absl::InfiniteFuture();
  // How long the local store may take to reach the caller's min_revision,
  // if later than `deadline` (a try-lock with a zero wait still needs its
  // own write applied here before it can decide).
  absl::Time catch_up_deadline = absl::InfinitePast();
  std::function<bool()> cancelled;
};

// Who may hold a name at once. The default is a plain (exclusive) lock:
// only the oldest key. `slots` > 1 makes a counting semaphore: the `slots`
// oldest keys hold. `shared` makes a reader: it holds once no older key is
// an exclusive one (a key whose value is kExclusiveValue). All contenders
// for one name must use the same kind of rule.
struct Rule {
  int64_t slots = 1;
  bool shared = false;
};
// The value lockd.v1 stores on an exclusive contender's key of a
// shared/exclusive lock.
inline constexpr char kExclusiveValue[] = "exclusive";

class LockManager {
 public:
  // `store` must outlive the manager.
  LockManager(const kv::MvccStore* store, Limits limits);
  LockManager(const LockManager&) = delete;
  LockManager& operator=(const LockManager&) = delete;

  // The state machine's commit hook (KvStateMachine::AddCommitListener).
  void OnCommit(const std::vector<mvccpb::Event>& events, int64_t revision);
  // After a snapshot install: events were skipped, so every waiter rereads.
  void OnRestore();

  // Admission of one waiting call on `name`; the returned ticket holds its
  // place until destroyed. Errors: kResourceExhausted past the limits.
  class Ticket;
  absl::StatusOr<std::unique_ptr<Ticket>> Admit(const std::string& name);

  // Waits until `key` (created at `create_revision` under Prefix(name)) is
  // the oldest key under the prefix, reading only local state at revisions
  // >= `min_revision` (the revision that created or found the key, so a
  // member behind the leader first catches up). Returns the revision at
  // which ownership was observed. Errors: kNotFound when the key no longer
  // exists with that create revision (its lease expired, it was deleted);
  // kDeadlineExceeded; kCancelled; kInternal for store failures.
  absl::StatusOr<int64_t> WaitForOwnership(
      const std::string& name, const std::string& key, int64_t create_revision,
      int64_t min_revision, const WaitScope& scope, const Rule& rule = Rule());

  // The oldest key under Prefix(name) in the local store (with its value),
  // or nullopt; `*revision` is the revision it was read at.
  absl::StatusOr<std::optional<mvccpb::KeyValue>> Oldest(
      const std::string& name, int64_t* revision) const;

  // Waits until the local store is past `after_revision` and something under
  // Prefix(name) changed after it. Errors: kDeadlineExceeded, kCancelled.
  absl::Status WaitForChange(const std::string& name, int64_t after_revision,
                             const WaitScope& scope);

  // Waiting calls admitted now (for tests and status).
  size_t waiters() const;

 private:
  // One waiting call's wake-up signal: a counter bumped by OnCommit.
  struct Waiter {
    absl::Mutex mu;
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;
  };
  // A waiter's subscriptions, removed when it goes away.
  class Subscription;

  uint64_t Generation(Waiter* w) const;
  // Sleeps until w's generation moves past `generation` or the scope ends.
  absl::Status Sleep(Waiter* w, uint64_t generation, const WaitScope& scope);
  void Wake(Waiter* w);

  const kv::MvccStore* store_;
  const Limits limits_;
  mutable absl::Mutex mu_;
  // Waiters interested in any event on exactly this key.
  std::map<std::string, std::vector<Waiter*>> by_key_ ABSL_GUARDED_BY(mu_);
  // Waiters interested in any event under this prefix.
  std::map<std::string, std::vector<Waiter*>> by_prefix_ ABSL_GUARDED_BY(mu_);
  // Waiters interested in every commit (catching up to a revision).
  std::vector<Waiter*> any_ ABSL_GUARDED_BY(mu_);
  // Admitted waiting calls by name, and in all.
  std::map<std::string, size_t> admitted_ ABSL_GUARDED_BY(mu_);
  size_t admitted_total_ ABSL_GUARDED_BY(mu_) = 0;
};

class LockManager::Ticket {
 public:
  ~Ticket();
  Ticket(const Ticket&) = delete;
  Ticket& operator=(const Ticket&) = delete;

 private:
  friend class LockManager;
  Ticket(LockManager* manager, std::string name)
      : manager_(manager), name_(std::move(name)) {}
  LockManager* manager_;
  std::string name_;
};

}  // namespace lockd::lock

#endif  // LOCKD_LOCK_LOCK_MANAGER_H_
