// Benchmark keys: fixed-size, zero-padded decimal indexes into a key space
// ("00000042" for index 42 with 8-byte keys), so keys are printable, sort in
// index order and a whole key space is one contiguous range.
#ifndef BENCH_LOADGEN_KEYS_H_
#define BENCH_LOADGEN_KEYS_H_

#include <cstdint>
#include <random>
#include <string>

#include "absl/status/statusor.h"

namespace lockd_bench {

class KeySpace {
 public:
  // Errors: kInvalidArgument when key_size is 0 or the largest index
  // (key_space_size - 1) has more digits than key_size, or the space is empty.
  static absl::StatusOr<KeySpace> Create(uint64_t key_size,
                                         uint64_t key_space_size);

  // `index` must be < size().
  std::string Key(uint64_t index) const;
  uint64_t size() const { return size_; }
  uint64_t key_size() const { return key_size_; }
  // [RangeStart(), RangeEnd()) holds every key of the space and nothing
  // else of the same length.
  std::string RangeStart() const { return Key(0); }
  std::string RangeEnd() const;

 private:
  KeySpace(uint64_t key_size, uint64_t size)
      : key_size_(key_size), size_(size) {}
  uint64_t key_size_;
  uint64_t size_;
};

// Picks key indexes for one client. Sequential: client `client` of `clients`
// takes client, client + clients, client + 2*clients, ... modulo the space, so
// together the clients walk the space in order. Random: uniform, from `seed`.
// Not thread-safe; one per client.
class KeyPicker {
 public:
  KeyPicker(const KeySpace* space, bool sequential, uint64_t client,
            uint64_t clients, uint64_t seed);
  uint64_t NextIndex();
  std::string NextKey() { return space_->Key(NextIndex()); }

 private:
  const KeySpace* space_;
  bool sequential_;
  uint64_t next_;
  uint64_t stride_;
  std::mt19937_64 rng_;
};

// A value of `size` printable bytes derived from `seed`.
std::string MakeValue(uint64_t size, uint64_t seed);

}  // namespace lockd_bench

#endif  // BENCH_LOADGEN_KEYS_H_
