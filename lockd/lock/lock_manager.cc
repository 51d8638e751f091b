#include "lockd/lock/lock_manager.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.pb.h"
#include "lockd/util/clock.h"

namespace lockd::lock {

// How often a sleeping waiter checks whether its client went away.
constexpr absl::Duration kCancelPoll = absl::Milliseconds(50);

std::string Prefix(const std::string& name) { return name + "/"; }

std::string OwnerKey(const std::string& name, int64_t lease) {
  return absl::StrCat(name, "/", absl::Hex(static_cast<uint64_t>(lease)));
}

// Registers one waiter for keys, prefixes or every commit; everything it
// registered is removed when it goes away, before the waiter does.
class LockManager::Subscription {
 public:
  Subscription(LockManager* m, Waiter* w) : m_(m), w_(w) {}
  ~Subscription() { Clear(); }

  void WatchKeys(std::vector<std::string> keys) {
    absl::MutexLock lock(&m_->mu_);
    ClearKeysLocked();
    keys_ = std::move(keys);
    for (const std::string& k : keys_) m_->by_key_[k].push_back(w_);
  }
  void WatchPrefix(const std::string& prefix) {
    absl::MutexLock lock(&m_->mu_);
    if (!prefix_.has_value()) {
      prefix_ = prefix;
      m_->by_prefix_[prefix].push_back(w_);
    }
  }
  void WatchCommits(bool on) {
    absl::MutexLock lock(&m_->mu_);
    if (on == any_) return;
    any_ = on;
    if (on) {
      m_->any_.push_back(w_);
    } else {
      Erase(&m_->any_);
    }
  }

 private:
  void Erase(std::vector<Waiter*>* v) {
    v->erase(std::remove(v->begin(), v->end(), w_), v->end());
  }
  void EraseFrom(std::map<std::string, std::vector<Waiter*>>* m,
                 const std::string& k) {
    auto it = m->find(k);
    if (it == m->end()) return;
    Erase(&it->second);
    if (it->second.empty()) m->erase(it);
  }
  void ClearKeysLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(m_->mu_) {
    for (const std::string& k : keys_) EraseFrom(&m_->by_key_, k);
    keys_.clear();
  }
  void Clear() {
    absl::MutexLock lock(&m_->mu_);
    ClearKeysLocked();
    if (prefix_.has_value()) EraseFrom(&m_->by_prefix_, *prefix_);
    if (any_) Erase(&m_->any_);
  }

  LockManager* m_;
  Waiter* w_;
  std::vector<std::string> keys_;
  std::optional<std::string> prefix_;
  bool any_ = false;
};

LockManager::LockManager(const kv::MvccStore* store, Limits limits)
    : store_(store), limits_(limits) {}

LockManager::Ticket::~Ticket() {
  absl::MutexLock lock(&manager_->mu_);
  auto it = manager_->admitted_.find(name_);
  if (--it->second == 0) manager_->admitted_.erase(it);
  --manager_->admitted_total_;
}

absl::StatusOr<std::unique_ptr<LockManager::Ticket>> LockManager::Admit(
    const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (admitted_total_ >= limits_.waiters_max) {
    return absl::ResourceExhaustedError(
        absl::StrCat("lockd: too many waiting lock and election calls (limit ",
                     limits_.waiters_max, ")"));
  }
  size_t& n = admitted_[name];
  if (n >= limits_.waiters_per_name_max) {
    if (n == 0) admitted_.erase(name);
    return absl::ResourceExhaustedError(
        absl::StrCat("lockd: too many waiters on one lock or election (limit ",
                     limits_.waiters_per_name_max, ")"));
  }
  ++n;
  ++admitted_total_;
  return std::unique_ptr<Ticket>(new Ticket(this, name));
}

size_t LockManager::waiters() const {
  absl::MutexLock lock(&mu_);
  return admitted_total_;
}

void LockManager::Wake(Waiter* w) {
  absl::MutexLock lock(&w->mu);
  ++w->generation;
}

void LockManager::OnCommit(const std::vector<mvccpb::Event>& events,
                           int64_t /*revision*/) {
  absl::MutexLock lock(&mu_);
  if (by_key_.empty() && by_prefix_.empty() && any_.empty()) return;
  std::set<Waiter*> wake(any_.begin(), any_.end());
  for (const mvccpb::Event& e : events) {
    const std::string& key = e.kv().key();
    if (auto it = by_key_.find(key); it != by_key_.end()) {
      wake.insert(it->second.begin(), it->second.end());
    }
    // Observers are few (bounded by the limits); a linear pass is fine.
    for (const auto& [prefix, waiters] : by_prefix_) {
      if (absl::StartsWith(key, prefix)) {
        wake.insert(waiters.begin(), waiters.end());
      }
    }
  }
  // Waiters unregister under mu_ before they go, so each pointer is live.
  for (Waiter* w : wake) Wake(w);
}

void LockManager::OnRestore() {
  absl::MutexLock lock(&mu_);
  std::set<Waiter*> wake(any_.begin(), any_.end());
  for (const auto& [k, v] : by_key_) wake.insert(v.begin(), v.end());
  for (const auto& [k, v] : by_prefix_) wake.insert(v.begin(), v.end());
  for (Waiter* w : wake) Wake(w);
}

uint64_t LockManager::Generation(Waiter* w) const {
  absl::MutexLock lock(&w->mu);
  return w->generation;
}

absl::Status LockManager::Sleep(Waiter* w, uint64_t generation,
                                const WaitScope& scope) {
  absl::MutexLock lock(&w->mu);
  auto moved = [w, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu) {
    return w->generation != generation;
  };
  while (!moved()) {
    const absl::Time now = MonotonicNow();
    if (now >= scope.deadline) {
      return absl::DeadlineExceededError("context deadline exceeded");
    }
    if (scope.cancelled && scope.cancelled()) {
      return absl::CancelledError("context canceled");
    }
    AwaitUntil(w->mu, absl::Condition(&moved),
               std::min(scope.deadline, now + kCancelPoll));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> LockManager::WaitForOwnership(
    const std::string& name, const std::string& key, int64_t create_revision,
    int64_t min_revision, const WaitScope& scope, const Rule& rule) {
  const bool plain = rule.slots <= 1 && !rule.shared;
  const std::string prefix = Prefix(name);
  Waiter waiter;
  Subscription sub(this, &waiter);
  std::string watched_predecessor;
  while (true) {
    // Taken before reading, so a commit after the read always wakes us.
    const uint64_t generation = Generation(&waiter);
    const int64_t revision = store_->revision();
    if (revision < min_revision) {
      sub.WatchCommits(true);
      if (store_->revision() < min_revision) {
        WaitScope catch_up = scope;
        catch_up.deadline = std::max(scope.deadline, scope.catch_up_deadline);
        if (absl::Status s = Sleep(&waiter, generation, catch_up); !s.ok()) {
          return s;
        }
      }
      continue;
    }
    sub.WatchCommits(false);
    // The one read the decision rests on: our key and its nearest older
    // neighbour, both at `revision`.
    etcdserverpb::RangeRequest req;
    req.set_key(prefix);
    req.set_range_end(PrefixEnd(prefix));
    req.set_revision(revision);
    req.set_max_create_revision(create_revision);
    req.set_sort_target(etcdserverpb::RangeRequest::CREATE);
    req.set_sort_order(etcdserverpb::RangeRequest::DESCEND);
    if (plain) {
      req.set_limit(2);
      req.set_keys_only(true);
    }
    etcdserverpb::RangeResponse resp;
    absl::Status s = store_->Range(req, &resp);
    if (!s.ok()) {
      // Compacted at exactly this revision meanwhile: read again, newer.
      if (store_->revision() > revision) continue;
      return s;
    }
    if (resp.kvs_size() == 0 || resp.kvs(0).key() != key ||
        resp.kvs(0).create_revision() != create_revision) {
      return absl::NotFoundError(absl::StrCat(
          "the key ", key, " no longer exists at revision ", revision));
    }
    if (resp.kvs_size() == 1) return revision;
    if (!plain) {
      // Semaphores and readers may be released by any older key: wake on
      // any change under the prefix and count again.
      int older_exclusive = 0;
      for (int i = 1; i < resp.kvs_size(); ++i) {
        if (resp.kvs(i).value() == kExclusiveValue) ++older_exclusive;
      }
      const bool holds =
          rule.shared ? older_exclusive == 0 : resp.kvs_size() - 1 < rule.slots;
      if (holds) return revision;
      sub.WatchPrefix(prefix);
      if (store_->revision() != revision) continue;
      if (absl::Status s = Sleep(&waiter, generation, scope); !s.ok()) {
        return s;
      }
      continue;
    }
    const std::string& predecessor = resp.kvs(1).key();
    if (predecessor != watched_predecessor) {
      // Our own key too: its loss (lease expiry) must end the wait at once.
      sub.WatchKeys({predecessor, key});
      watched_predecessor = predecessor;
    }
    // Anything committed between the read and the registration?
    if (store_->revision() != revision) continue;
    if (absl::Status s = Sleep(&waiter, generation, scope); !s.ok()) return s;
  }
}

absl::StatusOr<std::optional<mvccpb::KeyValue>> LockManager::Oldest(
    const std::string& name, int64_t* revision) const {
  const std::string prefix = Prefix(name);
  etcdserverpb::RangeRequest req;
  req.set_key(prefix);
  req.set_range_end(PrefixEnd(prefix));
  *revision = store_->revision();
  req.set_revision(*revision);
  req.set_sort_target(etcdserverpb::RangeRequest::CREATE);
  req.set_sort_order(etcdserverpb::RangeRequest::ASCEND);
  req.set_limit(1);
  etcdserverpb::RangeResponse resp;
  if (absl::Status s = store_->Range(req, &resp); !s.ok()) return s;
  if (resp.kvs_size() == 0) return std::optional<mvccpb::KeyValue>();
  return std::optional<mvccpb::KeyValue>(resp.kvs(0));
}

absl::Status LockManager::WaitForChange(const std::string& name,
                                        int64_t after_revision,
                                        const WaitScope& scope) {
  Waiter waiter;
  Subscription sub(this, &waiter);
  sub.WatchPrefix(Prefix(name));
  const uint64_t generation = Generation(&waiter);
  // A change may have committed before the subscription: look for it in the
  // history (bounded: only up to the current revision).
  const int64_t now = store_->revision();
  if (now > after_revision) {
    std::vector<mvccpb::Event> events;
    int64_t next = after_revision + 1;
    const std::string prefix = Prefix(name);
    while (next <= now) {
      events.clear();
      absl::Status s = store_->History(next, 1024, &events, &next);
      if (!s.ok()) return absl::OkStatus();  // compacted: reread anyway
      if (events.empty()) break;
      for (const mvccpb::Event& e : events) {
        if (absl::StartsWith(e.kv().key(), prefix)) return absl::OkStatus();
      }
    }
  }
  return Sleep(&waiter, generation, scope);
}

}  // namespace lockd::lock
