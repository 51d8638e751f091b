#include "kv/mvcc/keys.h"

#include <gtest/gtest.h>

#include <random>

namespace lockd::kv {
namespace {

std::string RandomKey(std::mt19937& rng) {
  // Heavy on the bytes the escaping treats specially.
  static const char kAlphabet[] = {'\0', '\x01', '\xff', 'a', 'b'};
  std::string k;
  int len = rng() % 5;
  for (int i = 0; i < len; ++i) k.push_back(kAlphabet[rng() % 5]);
  return k;
}

TEST(KeysTest, EncodeIndexKey_PreservesUserKeyOrderThenNewestFirst) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string a = RandomKey(rng), b = RandomKey(rng);
    Revision ra{static_cast<int64_t>(rng() % 50),
                static_cast<int64_t>(rng() % 3)};
    Revision rb{static_cast<int64_t>(rng() % 50),
                static_cast<int64_t>(rng() % 3)};
    std::string ea = EncodeIndexKey(a, ra), eb = EncodeIndexKey(b, rb);
    if (a != b) {
      EXPECT_EQ(a < b, ea < eb) << i;
    } else if (!(ra == rb)) {
      EXPECT_EQ(rb < ra, ea < eb) << i;  // newer first
    }
    // Bounds bracket every entry of the key and no other key's.
    EXPECT_LE(IndexKeyLowerBound(a), ea);
    EXPECT_LT(ea, IndexKeyUpperBound(a));
    if (a < b) {
      EXPECT_LE(IndexKeyUpperBound(a), eb);
    }
    std::string decoded;
    Revision rd;
    ASSERT_TRUE(DecodeIndexKey(ea, &decoded, &rd));
    EXPECT_EQ(decoded, a);
    EXPECT_EQ(rd, ra);
  }
}

TEST(KeysTest, EncodeRevision_RoundTripsAndSorts) {
  Revision a{5, 2}, b{5, 10}, c{300, 0};
  EXPECT_LT(EncodeRevision(a), EncodeRevision(b));
  EXPECT_LT(EncodeRevision(b), EncodeRevision(c));
  EXPECT_EQ(DecodeRevision(EncodeRevision(c)), c);
}

TEST(KeysTest, DecodeIndexKey_RejectsMalformed) {
  std::string k;
  Revision r;
  EXPECT_FALSE(DecodeIndexKey("abc", &k, &r));
  EXPECT_FALSE(DecodeIndexKey(std::string("a\0\x05", 3), &k, &r));
  EXPECT_FALSE(DecodeIndexKey(IndexKeyLowerBound("a") + "short", &k, &r));
}

}  // namespace
}  // namespace lockd::kv
