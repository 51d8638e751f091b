#include "kv/mvcc/validate.h"

#include <gtest/gtest.h>

namespace lockd::kv {
namespace {

using etcdserverpb::RequestOp;
using etcdserverpb::TxnRequest;

RequestOp Put(const std::string& k) {
  RequestOp op;
  op.mutable_request_put()->set_key(k);
  return op;
}
RequestOp Del(const std::string& k, const std::string& end = "") {
  RequestOp op;
  op.mutable_request_delete_range()->set_key(k);
  op.mutable_request_delete_range()->set_range_end(end);
  return op;
}

TEST(ValidateTest, ValidatePut_Errors) {
  etcdserverpb::PutRequest p;
  EXPECT_EQ(ValidatePut(p).message(), "etcdserver: key is not provided");
  p.set_key("k");
  p.set_ignore_value(true);
  p.set_value("v");
  EXPECT_EQ(ValidatePut(p).message(), "etcdserver: value is provided");
  p.clear_value();
  p.set_ignore_lease(true);
  p.set_lease(5);
  EXPECT_EQ(ValidatePut(p).message(), "etcdserver: lease is provided");
}

TEST(ValidateTest, ValidateTxn_TooManyOps) {
  TxnRequest t;
  for (int i = 0; i < 3; ++i) *t.add_success() = Put("k" + std::to_string(i));
  EXPECT_TRUE(ValidateTxn(t, 3).ok());
  EXPECT_EQ(ValidateTxn(t, 2).message(),
            "etcdserver: too many operations in txn request");
  EXPECT_EQ(ValidateTxn(t, 2).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateTest, ValidateTxn_DuplicateKeys) {
  TxnRequest t;
  *t.add_success() = Put("a");
  *t.add_success() = Put("a");
  EXPECT_EQ(ValidateTxn(t, 128).message(),
            "etcdserver: duplicate key given in txn request");

  TxnRequest put_in_deleted_range;
  *put_in_deleted_range.add_success() = Del("a", "c");
  *put_in_deleted_range.add_success() = Put("b");
  EXPECT_FALSE(ValidateTxn(put_in_deleted_range, 128).ok());

  // The same key in success and failure is fine: only one runs.
  TxnRequest branches;
  *branches.add_success() = Put("a");
  *branches.add_failure() = Put("a");
  EXPECT_TRUE(ValidateTxn(branches, 128).ok());

  // A nested txn's two branches may write the same key...
  TxnRequest nested;
  RequestOp inner;
  *inner.mutable_request_txn()->add_success() = Put("x");
  *inner.mutable_request_txn()->add_failure() = Put("x");
  *nested.add_success() = inner;
  EXPECT_TRUE(ValidateTxn(nested, 128).ok());
  // ...but not a key the outer level writes too.
  *nested.add_success() = Put("x");
  EXPECT_FALSE(ValidateTxn(nested, 128).ok());

  // Overlapping deletes are allowed.
  TxnRequest dels;
  *dels.add_success() = Del("a", "z");
  *dels.add_success() = Del("b");
  EXPECT_TRUE(ValidateTxn(dels, 128).ok());
}

TEST(ValidateTest, ValidateTxn_EmptyCompareKey) {
  TxnRequest t;
  t.add_compare();
  EXPECT_EQ(ValidateTxn(t, 128).message(), "etcdserver: key is not provided");
}

}  // namespace
}  // namespace lockd::kv
