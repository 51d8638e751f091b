#include "kv/mvcc/validate.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "kv/mvcc/errors.h"

namespace lockd::kv {
namespace {

// A deleted interval [begin, end); end empty means unbounded.
struct Interval {
  std::string begin;
  std::string end;
  bool Contains(const std::string& key) const {
    return key >= begin && (end.empty() || key < end);
  }
};

Interval DeleteInterval(const etcdserverpb::DeleteRangeRequest& d) {
  if (d.range_end().empty()) return {d.key(), d.key() + std::string(1, '\0')};
  if (d.range_end() == std::string(1, '\0')) return {d.key(), ""};
  return {d.key(), d.range_end()};
}

bool Deleted(const std::vector<Interval>& dels, const std::string& key) {
  for (const Interval& i : dels) {
    if (i.Contains(key)) return true;
  }
  return false;
}

absl::Status ValidateOp(const etcdserverpb::RequestOp& op, int64_t max_ops) {
  switch (op.request_case()) {
    case etcdserverpb::RequestOp::kRequestRange:
      return ValidateRange(op.request_range());
    case etcdserverpb::RequestOp::kRequestPut:
      return ValidatePut(op.request_put());
    case etcdserverpb::RequestOp::kRequestDeleteRange:
      return ValidateDeleteRange(op.request_delete_range());
    case etcdserverpb::RequestOp::kRequestTxn:
      return ValidateTxn(op.request_txn(), max_ops);
    default:
      return absl::InvalidArgumentError("etcdserver: empty request in txn");
  }
}

// The keys this list of ops may put and the intervals it may delete, with
// etcd's rule: a key is written at most once on any path (the two branches
// of a nested txn are exclusive, so they may write the same key).
absl::Status CheckIntervals(
    const google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>& ops,
    std::set<std::string>* puts, std::vector<Interval>* dels) {
  for (const auto& op : ops) {
    if (op.has_request_delete_range()) {
      dels->push_back(DeleteInterval(op.request_delete_range()));
    }
  }
  for (const auto& op : ops) {
    if (!op.has_request_txn()) continue;
    std::set<std::string> puts_then, puts_else;
    std::vector<Interval> dels_then, dels_else;
    if (absl::Status s =
            CheckIntervals(op.request_txn().success(), &puts_then, &dels_then);
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            CheckIntervals(op.request_txn().failure(), &puts_else, &dels_else);
        !s.ok()) {
      return s;
    }
    for (const std::string& k : puts_then) {
      if (puts->count(k) || Deleted(*dels, k)) return ErrDuplicateKey();
      puts->insert(k);
    }
    for (const std::string& k : puts_else) {
      if (puts->count(k) && !puts_then.count(k)) return ErrDuplicateKey();
      if (Deleted(*dels, k)) return ErrDuplicateKey();
      puts->insert(k);
    }
    dels->insert(dels->end(), dels_then.begin(), dels_then.end());
    dels->insert(dels->end(), dels_else.begin(), dels_else.end());
  }
  for (const auto& op : ops) {
    if (!op.has_request_put()) continue;
    const std::string& k = op.request_put().key();
    if (puts->count(k) || Deleted(*dels, k)) return ErrDuplicateKey();
    puts->insert(k);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRange(const etcdserverpb::RangeRequest& req) {
  if (req.key().empty()) return ErrEmptyKey();
  if (!etcdserverpb::RangeRequest::SortOrder_IsValid(req.sort_order())) {
    return absl::InvalidArgumentError("etcdserver: invalid sort option");
  }
  if (!etcdserverpb::RangeRequest::SortTarget_IsValid(req.sort_target())) {
    return absl::InvalidArgumentError("etcdserver: invalid sort option");
  }
  return absl::OkStatus();
}

absl::Status ValidatePut(const etcdserverpb::PutRequest& req) {
  if (req.key().empty()) return ErrEmptyKey();
  if (req.ignore_value() && !req.value().empty()) return ErrValueProvided();
  if (req.ignore_lease() && req.lease() != 0) return ErrLeaseProvided();
  return absl::OkStatus();
}

absl::Status ValidateDeleteRange(const etcdserverpb::DeleteRangeRequest& req) {
  if (req.key().empty()) return ErrEmptyKey();
  return absl::OkStatus();
}

absl::Status ValidateTxn(const etcdserverpb::TxnRequest& req,
                         int64_t max_txn_ops) {
  int64_t ops = req.compare_size();
  ops = std::max<int64_t>(ops, req.success_size());
  ops = std::max<int64_t>(ops, req.failure_size());
  if (ops > max_txn_ops) return ErrTooManyOps();
  for (const etcdserverpb::Compare& c : req.compare()) {
    if (c.key().empty()) return ErrEmptyKey();
  }
  for (const auto* branch : {&req.success(), &req.failure()}) {
    for (const etcdserverpb::RequestOp& op : *branch) {
      if (absl::Status s = ValidateOp(op, max_txn_ops - ops); !s.ok()) {
        return s;
      }
    }
  }
  // Duplicate writes: checked once, at the top level, over the whole tree.
  std::set<std::string> puts;
  std::vector<Interval> dels;
  if (absl::Status s = CheckIntervals(req.success(), &puts, &dels); !s.ok()) {
    return s;
  }
  puts.clear();
  dels.clear();
  return CheckIntervals(req.failure(), &puts, &dels);
}

}  // namespace lockd::kv
