#include "common/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <gtest/gtest.h>

namespace potluck {
namespace {

bool IsHalfNaN(uint16_t bits) { return (bits & 0x7c00) == 0x7c00 && (bits & 0x3ff) != 0; }

TEST(DType, SizesAndNamesRoundTrip) {
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBFloat16), 2u);
  EXPECT_EQ(DTypeSize(DType::kInt64), 8u);
  EXPECT_EQ(DTypeSize(DType::kInt8), 1u);
  for (DType dtype : kAllDTypes) {
    auto parsed = ParseDType(DTypeName(dtype));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, dtype);
  }
  EXPECT_EQ(*ParseDType("BF16"), DType::kBFloat16);
  auto bad = ParseDType("float128");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("float128"), absl::string_view::npos);
  EXPECT_TRUE(IsValidDType(7));
  EXPECT_FALSE(IsValidDType(8));
}

// Every one of the 65536 float16 patterns survives half -> float -> half;
// NaNs stay NaN with their sign (and quiet NaNs keep their payload).
TEST(Float16, EveryBitPatternRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const uint16_t half = static_cast<uint16_t>(bits);
    const float value = HalfBitsToFloat(half);
    const uint16_t back = FloatToHalfBits(value);
    if (IsHalfNaN(half)) {
      ASSERT_TRUE(std::isnan(value)) << std::hex << bits;
      ASSERT_TRUE(IsHalfNaN(back)) << std::hex << bits;
      ASSERT_EQ(back & 0x8000, half & 0x8000) << std::hex << bits;
      if (half & 0x200) {
        ASSERT_EQ(back, half) << std::hex << bits;
      }
    } else {
      ASSERT_EQ(back, half) << std::hex << bits << " -> " << value;
    }
  }
}

TEST(Float16, SpecialValues) {
  EXPECT_EQ(FloatToHalfBits(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalfBits(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalfBits(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalfBits(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7bff);  // largest finite
  EXPECT_EQ(FloatToHalfBits(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65520.0f), 0x7c00);  // the tie rounds to even: infinity
  EXPECT_EQ(FloatToHalfBits(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(IsHalfNaN(FloatToHalfBits(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(IsHalfNaN(FloatToHalfBits(std::numeric_limits<float>::signaling_NaN())));
  EXPECT_TRUE(std::isinf(HalfBitsToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(0x7e00)));
  // A NaN whose payload lives only in the low float bits must not become infinity.
  EXPECT_TRUE(IsHalfNaN(FloatToHalfBits(std::bit_cast<float>(0x7f800001u))));
}

TEST(Float16, SubnormalsAreExactAndRoundToEven) {
  EXPECT_EQ(HalfBitsToFloat(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(HalfBitsToFloat(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(HalfBitsToFloat(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 1 unit: even
  EXPECT_EQ(FloatToHalfBits(std::ldexp(3.0f, -25)), 0x0002);  // tie between 1 and 2 units: even
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.5f, -25)), 0x0001);  // above the tie
  EXPECT_EQ(FloatToHalfBits(-std::ldexp(1.0f, -24)), 0x8001);
  // Rounding up from the largest subnormal carries into the smallest normal.
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1023.75f, -24)), 0x0400);
}

// For random floats in float16's range, the result is the nearest float16
// (ties to even): neither neighbour of the result is closer.
TEST(Float16, RandomFloatsRoundToTheNearestValue) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> exponent(-26.0f, 16.0f);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int i = 0; i < 200000; ++i) {
    const float value = unit(rng) * std::exp2(exponent(rng));
    const uint16_t half = FloatToHalfBits(value);
    if ((half & 0x7fff) == 0x7c00) {  // overflowed: only right at or past 65520
      ASSERT_GE(std::fabs(value), 65520.0f);
      continue;
    }
    const double error = std::fabs(static_cast<double>(HalfBitsToFloat(half)) - value);
    for (int step : {-1, 1}) {
      const uint16_t neighbour = static_cast<uint16_t>((half & 0x7fff) + step) | (half & 0x8000);
      if ((half & 0x7fff) == 0 && step < 0) continue;
      if ((neighbour & 0x7fff) >= 0x7c00) continue;  // no finite neighbour above
      const double other = std::fabs(static_cast<double>(HalfBitsToFloat(neighbour)) - value);
      ASSERT_LE(error, other) << value;
      if (error == other) {
        ASSERT_EQ(half & 1, 0) << "tie not rounded to even: " << value;
      }
    }
  }
}

TEST(BFloat16, EveryBitPatternRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const uint16_t b = static_cast<uint16_t>(bits);
    const float value = BFloat16BitsToFloat(b);
    const uint16_t back = FloatToBFloat16Bits(value);
    if (std::isnan(value)) {
      ASSERT_TRUE(std::isnan(BFloat16BitsToFloat(back))) << std::hex << bits;
      ASSERT_EQ(back & 0x8000, b & 0x8000);
    } else {
      ASSERT_EQ(back, b) << std::hex << bits;
    }
  }
}

TEST(BFloat16, RoundsToNearestEvenAndKeepsSpecials) {
  EXPECT_EQ(FloatToBFloat16Bits(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up.
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(FloatToBFloat16Bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBFloat16Bits(std::numeric_limits<float>::max()), 0x7f80);  // rounds to inf
  // NaN with payload only in the dropped bits stays NaN instead of becoming inf.
  EXPECT_TRUE(
      std::isnan(BFloat16BitsToFloat(FloatToBFloat16Bits(std::bit_cast<float>(0x7f800001u)))));
  // Subnormals survive truncation to bfloat16's 8-bit exponent.
  EXPECT_EQ(BFloat16BitsToFloat(0x0001), std::bit_cast<float>(0x00010000u));
  EXPECT_EQ(FloatToBFloat16Bits(std::bit_cast<float>(0x00010000u)), 0x0001);
}

TEST(Conversions, BulkMatchesScalar) {
  std::vector<float> in = {0.0f, -1.5f, 3.14159f, 65504.0f, 1e-6f, -7e4f};
  std::vector<Float16> half(in.size());
  std::vector<BFloat16> bf(in.size());
  std::vector<float> out(in.size());
  ConvertFloatToHalf(in.data(), half.data(), in.size());
  ConvertHalfToFloat(half.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(half[i].bits, FloatToHalfBits(in[i]));
    EXPECT_EQ(out[i], HalfBitsToFloat(half[i].bits));
  }
  ConvertFloatToBFloat16(in.data(), bf.data(), in.size());
  ConvertBFloat16ToFloat(bf.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(bf[i].bits, FloatToBFloat16Bits(in[i]));
    EXPECT_EQ(out[i], BFloat16BitsToFloat(bf[i].bits));
  }
}

}  // namespace
}  // namespace potluck
