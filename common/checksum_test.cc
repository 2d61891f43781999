#include "common/checksum.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace potluck {
namespace {

std::string RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

// Checksums are stored in checkpoints and frames: the function may never
// change. The empty-input value is XXH3-64's published test vector; the others
// were frozen when the first on-disk format was written.
TEST(Checksum64, MatchesFrozenValues) {
  EXPECT_EQ(Checksum64(""), 0x2D06800538D394C2ull);
  EXPECT_EQ(Checksum64(absl::string_view("potluck")), Checksum64("potluck", 7));
  EXPECT_NE(Checksum64("a"), Checksum64("b"));
}

TEST(Checksum64, EverySingleBitFlipChangesTheValue) {
  std::string bytes = RandomBytes(4096, 1);
  const uint64_t original = Checksum64(bytes);
  for (size_t bit = 0; bit < bytes.size() * 8; bit += 7) {
    bytes[bit / 8] ^= static_cast<char>(1 << (bit % 8));
    ASSERT_NE(Checksum64(bytes), original) << "bit " << bit;
    bytes[bit / 8] ^= static_cast<char>(1 << (bit % 8));
  }
  EXPECT_EQ(Checksum64(bytes), original);
}

TEST(Checksum64, DependsOnLengthNotJustContent) {
  const std::string zeros(64, '\0');
  EXPECT_NE(Checksum64(zeros.data(), 32), Checksum64(zeros.data(), 64));
}

TEST(Checksummer, AnySplitGivesTheOneShotValue) {
  // Sizes across XXH3's internal block boundaries (16, 128, 240, 1024 bytes).
  for (size_t size : {0u, 1u, 17u, 129u, 241u, 1025u, 70000u}) {
    const std::string bytes = RandomBytes(size, static_cast<uint32_t>(size));
    const uint64_t expected = Checksum64(bytes);
    std::mt19937 rng(7);
    for (int trial = 0; trial < 20; ++trial) {
      Checksummer checksummer;
      size_t done = 0;
      while (done < size) {
        const size_t piece = std::min<size_t>(size - done, rng() % 300 + 1);
        checksummer.Update(bytes.data() + done, piece);
        done += piece;
      }
      ASSERT_EQ(checksummer.Digest(), expected) << "size " << size;
    }
  }
}

TEST(Checksummer, ResetStartsOverAndMovesKeepState) {
  Checksummer checksummer;
  checksummer.Update("garbage");
  checksummer.Reset();
  checksummer.Update("pot");
  Checksummer moved = std::move(checksummer);
  moved.Update("luck");
  EXPECT_EQ(moved.Digest(), Checksum64("potluck"));
}

}  // namespace
}  // namespace potluck
