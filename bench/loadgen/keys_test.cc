#include "bench/loadgen/keys.h"

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace lockd_bench {
namespace {

TEST(KeySpaceTest, Key_IsZeroPaddedToKeySize) {
  auto space = KeySpace::Create(8, 1000);
  ASSERT_TRUE(space.ok()) << space.status();
  EXPECT_EQ(space->Key(0), "00000000");
  EXPECT_EQ(space->Key(42), "00000042");
  EXPECT_EQ(space->Key(999), "00000999");
}

TEST(KeySpaceTest, Create_RejectsSpaceTooLargeForKeySize) {
  EXPECT_FALSE(KeySpace::Create(2, 101).ok());
  EXPECT_TRUE(KeySpace::Create(2, 100).ok());
  EXPECT_FALSE(KeySpace::Create(0, 1).ok());
  EXPECT_FALSE(KeySpace::Create(8, 0).ok());
}

TEST(KeySpaceTest, Range_HoldsExactlyTheSpace) {
  auto space = KeySpace::Create(4, 50);
  ASSERT_TRUE(space.ok());
  const std::string start = space->RangeStart(), end = space->RangeEnd();
  for (uint64_t i = 0; i < 50; ++i) {
    const std::string k = space->Key(i);
    EXPECT_LE(start, k);
    EXPECT_LT(k, end);
  }
  EXPECT_GE(std::string("0050"), end);
}

TEST(KeyPickerTest, Sequential_ClientsTogetherWalkTheSpace) {
  auto space = KeySpace::Create(8, 100);
  ASSERT_TRUE(space.ok());
  std::set<uint64_t> seen;
  for (uint64_t c = 0; c < 4; ++c) {
    KeyPicker picker(&*space, /*sequential=*/true, c, 4, 1);
    for (int i = 0; i < 25; ++i) seen.insert(picker.NextIndex());
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(KeyPickerTest, Sequential_WrapsAround) {
  auto space = KeySpace::Create(8, 3);
  ASSERT_TRUE(space.ok());
  KeyPicker picker(&*space, true, 0, 1, 1);
  EXPECT_EQ(picker.NextKey(), "00000000");
  EXPECT_EQ(picker.NextKey(), "00000001");
  EXPECT_EQ(picker.NextKey(), "00000002");
  EXPECT_EQ(picker.NextKey(), "00000000");
}

TEST(KeyPickerTest, Random_StaysInSpaceAndCoversIt) {
  auto space = KeySpace::Create(8, 10);
  ASSERT_TRUE(space.ok());
  KeyPicker picker(&*space, false, 0, 1, 99);
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t index = picker.NextIndex();
    ASSERT_LT(index, 10u);
    seen.insert(index);
  }
  EXPECT_EQ(seen.size(), 10u);
}

TEST(KeyPickerTest, Random_DiffersAcrossClients) {
  auto space = KeySpace::Create(8, 1000000);
  ASSERT_TRUE(space.ok());
  KeyPicker a(&*space, false, 0, 2, 5), b(&*space, false, 1, 2, 5);
  int same = 0;
  for (int i = 0; i < 100; ++i) same += a.NextIndex() == b.NextIndex();
  EXPECT_LT(same, 5);
}

TEST(MakeValueTest, HasSizeAndIsDeterministic) {
  EXPECT_EQ(MakeValue(256, 1).size(), 256u);
  EXPECT_EQ(MakeValue(256, 1), MakeValue(256, 1));
  EXPECT_NE(MakeValue(256, 1), MakeValue(256, 2));
  EXPECT_EQ(MakeValue(0, 1), "");
}

}  // namespace
}  // namespace lockd_bench
