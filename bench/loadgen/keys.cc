#include "bench/loadgen/keys.h"

#include <cassert>

#include "absl/strings/str_format.h"

namespace lockd_bench {

absl::StatusOr<KeySpace> KeySpace::Create(uint64_t key_size,
                                          uint64_t key_space_size) {
  if (key_size == 0) return absl::InvalidArgumentError("key-size must be > 0");
  if (key_space_size == 0) {
    return absl::InvalidArgumentError("key-space-size must be > 0");
  }
  const uint64_t digits = absl::StrFormat("%d", key_space_size - 1).size();
  if (digits > key_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "key-space-size %d needs keys of at least %d bytes, key-size is %d",
        key_space_size, digits, key_size));
  }
  return KeySpace(key_size, key_space_size);
}

std::string KeySpace::Key(uint64_t index) const {
  assert(index < size_);
  std::string digits = absl::StrFormat("%d", index);
  return std::string(key_size_ - digits.size(), '0') + digits;
}

std::string KeySpace::RangeEnd() const {
  // Every key of the space is <= Key(size - 1) and shares its length, so the
  // key right after it closes the range.
  return Key(size_ - 1) + std::string(1, '\0');
}

KeyPicker::KeyPicker(const KeySpace* space, bool sequential, uint64_t client,
                     uint64_t clients, uint64_t seed)
    : space_(space),
      sequential_(sequential),
      next_(client % space->size()),
      stride_(clients == 0 ? 1 : clients % space->size()),
      rng_(seed * 0x9E3779B97F4A7C15ull + client) {}

uint64_t KeyPicker::NextIndex() {
  if (!sequential_) {
    return std::uniform_int_distribution<uint64_t>(0, space_->size() - 1)(rng_);
  }
  const uint64_t index = next_;
  // Widen to avoid overflow for key spaces near 2^64 (cannot occur with
  // decimal keys, but the arithmetic should not depend on that).
  next_ = static_cast<uint64_t>(
      (static_cast<unsigned __int128>(next_) + stride_) % space_->size());
  return index;
}

std::string MakeValue(uint64_t size, uint64_t seed) {
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::mt19937_64 rng(seed);
  std::string value(size, 'x');
  for (char& c : value) c = kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
  return value;
}

}  // namespace lockd_bench
