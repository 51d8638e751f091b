// Simulates a member whose key-value data silently diverged (a disk or
// software fault): writes one key into a stopped member's store at the
// store's current applied index, so replaying the raft log does not cover
// it, and prints the store's new revision. For corrupt_check_test only.
#include <cstdio>
#include <string>

#include "etcdserverpb/rpc.pb.h"
#include "kv/mvcc/store.h"

namespace {

class NoLeases : public lockd::kv::LeaseOracle {
 public:
  bool LeaseExists(int64_t) const override { return false; }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: store_tamper MEMBER_DATA_DIR (stopped)\n");
    return 2;
  }
  auto store = lockd::kv::MvccStore::Open(std::string(argv[1]) + "/member/kv");
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  NoLeases leases;
  auto batch = (*store)->BeginApply(&leases);
  etcdserverpb::PutRequest put;
  put.set_key("tampered");
  put.set_value("not from the log");
  etcdserverpb::PutResponse resp;
  absl::Status s = batch->Put(put, &resp);
  if (s.ok()) s = batch->Commit((*store)->applied_index());
  if (!s.ok()) {
    std::fprintf(stderr, "put: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("%ld\n", static_cast<long>((*store)->revision()));
  return 0;
}
