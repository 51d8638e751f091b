#include "tests/harness/workload.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tests/harness/cluster.h"
#include "tests/harness/process.h"

namespace lockd::testing {

void Tally::Call(const std::string& what, absl::Duration took,
                 const absl::Status& s) {
  absl::MutexLock lock(&mu);
  ++calls;
  if (took > longest) {
    longest = took;
    longest_what = what;
  }
  if (!s.ok()) failures.push_back(absl::StrCat(what, ": ", s.ToString()));
}

void Tally::Acked(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu);
  acked[key] = value;
}

int64_t Tally::Calls() {
  absl::MutexLock lock(&mu);
  return calls;
}

std::string Tally::FirstFailures(size_t n) {
  absl::MutexLock lock(&mu);
  return absl::StrJoin(failures.begin(),
                       failures.begin() + std::min(n, failures.size()), "\n");
}

void LockdPutGetLoop(client::Client* c, const std::string& prefix,
                     const std::atomic<bool>* stop, Tally* t,
                     std::atomic<size_t>* most_endpoints) {
  for (int i = 0; !stop->load(); ++i) {
    const std::string key = absl::StrCat(prefix, i);
    const std::string value = absl::StrCat("v", i);
    etcdserverpb::PutRequest put;
    put.set_key(key);
    put.set_value(value);
    absl::Time start = absl::Now();
    absl::StatusOr<etcdserverpb::PutResponse> p = c->Put(put);
    t->Call(absl::StrCat("put ", key), absl::Now() - start, p.status());
    if (p.ok()) t->Acked(key, value);
    etcdserverpb::RangeRequest get;
    get.set_key(key);
    start = absl::Now();
    absl::StatusOr<etcdserverpb::RangeResponse> r = c->Range(get);
    absl::Status s = r.status();
    if (r.ok() && p.ok() &&
        (r->kvs_size() != 1 || r->kvs(0).value() != value)) {
      s = absl::DataLossError("linearizable read missed the acked put");
    }
    t->Call(absl::StrCat("get ", key), absl::Now() - start, s);
    if (most_endpoints != nullptr) {
      size_t n = c->current_endpoints().size();
      size_t seen = most_endpoints->load();
      while (n > seen && !most_endpoints->compare_exchange_weak(seen, n)) {
      }
    }
  }
}

void EtcdctlPutGetLoop(const std::string& endpoints, const std::string& prefix,
                       const std::atomic<bool>* stop, Tally* t) {
  for (int i = 0; !stop->load(); ++i) {
    const std::string key = absl::StrCat(prefix, i);
    absl::Time start = absl::Now();
    absl::StatusOr<CommandResult> p = RunEtcdctl(endpoints, {"put", key, "x"});
    absl::Status s = p.status();
    if (s.ok() && p->exit_code != 0) s = absl::UnknownError(p->err);
    t->Call(absl::StrCat("etcdctl put ", key), absl::Now() - start, s);
    if (s.ok()) t->Acked(key, "x");
    start = absl::Now();
    absl::StatusOr<CommandResult> g =
        RunEtcdctl(endpoints, {"get", key, "--print-value-only"});
    s = g.status();
    if (s.ok() && g->exit_code != 0) s = absl::UnknownError(g->err);
    if (s.ok() && p.ok() && p->exit_code == 0 && g->out != "x\n") {
      s = absl::DataLossError(absl::StrCat("read \"", g->out, "\""));
    }
    t->Call(absl::StrCat("etcdctl get ", key), absl::Now() - start, s);
  }
}

void LetRun(Tally* t, int64_t more, absl::Duration timeout) {
  const int64_t until = t->Calls() + more;
  const absl::Time deadline = absl::Now() + timeout;
  while (t->Calls() < until && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
}

}  // namespace lockd::testing
