#include "collectives/codec.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "common/dtype.h"

namespace potluck {
namespace {

constexpr WireCodec kAllCodecs[] = {WireCodec::kNone, WireCodec::kFloat16, WireCodec::kBFloat16,
                                    WireCodec::kInt8};
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint32_t kInt8NaNScaleBits = 0x7fc00000u;

uint32_t Bits(float value) { return std::bit_cast<uint32_t>(value); }

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

std::vector<float> UniformFloats(size_t count, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(count);
  for (float& value : values) value = dist(rng);
  return values;
}

// Random signs and exponents in [min_exponent, max_exponent]: normal floats
// spread over many binades.
std::vector<float> LogUniformFloats(size_t count, int min_exponent, int max_exponent,
                                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> exponent(min_exponent, max_exponent);
  std::uniform_real_distribution<float> significand(1.0f, 2.0f);
  std::vector<float> values(count);
  for (float& value : values) {
    value = std::ldexp(significand(rng), exponent(rng)) * ((rng() & 1) ? -1.0f : 1.0f);
  }
  return values;
}

std::vector<unsigned char> EncodeToVector(WireCodec codec, const std::vector<float>& values) {
  std::vector<unsigned char> bytes(EncodedBytes(codec, values.size()));
  Encode(codec, values.data(), values.size(), bytes.data());
  return bytes;
}

std::vector<float> DecodeToVector(WireCodec codec, const std::vector<unsigned char>& bytes,
                                  size_t count) {
  std::vector<float> values(count, -12345.0f);
  Decode(codec, bytes.data(), count, values.data());
  return values;
}

float Int8Scale(const unsigned char* bytes) {
  float scale;
  std::memcpy(&scale, bytes, sizeof(float));
  return scale;
}

int Int8CodeAt(const std::vector<unsigned char>& bytes, size_t i) {
  return static_cast<int8_t>(bytes[sizeof(float) + i]);
}

std::string CodecTestName(const ::testing::TestParamInfo<WireCodec>& info) {
  return std::string(WireCodecName(info.param));
}

// ---- names and sizes ----

TEST(WireCodec, EncodedBytesPerCodec) {
  EXPECT_EQ(EncodedBytes(WireCodec::kNone, 1000), 4000u);
  EXPECT_EQ(EncodedBytes(WireCodec::kFloat16, 1000), 2000u);
  EXPECT_EQ(EncodedBytes(WireCodec::kBFloat16, 1000), 2000u);
  EXPECT_EQ(EncodedBytes(WireCodec::kInt8, 1000), 1004u);
  EXPECT_EQ(EncodedBytes(WireCodec::kNone, 0), 0u);
  EXPECT_EQ(EncodedBytes(WireCodec::kFloat16, 0), 0u);
  EXPECT_EQ(EncodedBytes(WireCodec::kInt8, 0), 4u);  // the scale alone
}

TEST(WireCodec, NamesRoundTripThroughParse) {
  EXPECT_EQ(WireCodecName(WireCodec::kNone), "none");
  EXPECT_EQ(WireCodecName(WireCodec::kFloat16), "fp16");
  EXPECT_EQ(WireCodecName(WireCodec::kBFloat16), "bf16");
  EXPECT_EQ(WireCodecName(WireCodec::kInt8), "int8");
  for (WireCodec codec : kAllCodecs) {
    absl::StatusOr<WireCodec> parsed = ParseWireCodec(WireCodecName(codec));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, codec);
    EXPECT_TRUE(IsValidWireCodec(static_cast<uint8_t>(codec)));
  }
  EXPECT_FALSE(IsValidWireCodec(4));
  EXPECT_FALSE(IsValidWireCodec(255));
}

TEST(WireCodec, ParseRejectsUnknownNamesWithInvalidArgumentNamingThem) {
  for (absl::string_view name : {"fp8", "FP16", "float16", ""}) {
    absl::StatusOr<WireCodec> parsed = ParseWireCodec(name);
    ASSERT_FALSE(parsed.ok()) << name;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(absl::StrCat("'", name, "'")), absl::string_view::npos)
        << parsed.status();
  }
}

// ---- properties every codec has ----

class CodecTest : public ::testing::TestWithParam<WireCodec> {};

INSTANTIATE_TEST_SUITE_P(AllCodecs, CodecTest, ::testing::ValuesIn(kAllCodecs), CodecTestName);

// For int8, acc + q * scale may compile to one fused multiply-add where the
// target has FMA (aarch64; x86 only with -march): either rounding is right.
// (Decode, which the all-gather uses, is a plain multiply everywhere.)
TEST_P(CodecTest, DecodeAddEqualsDecodeThenAdd) {
  const WireCodec codec = GetParam();
  const std::vector<float> values = UniformFloats(1000, -3.0f, 3.0f, 1);
  const std::vector<unsigned char> bytes = EncodeToVector(codec, values);
  const std::vector<float> decoded = DecodeToVector(codec, bytes, values.size());
  const std::vector<float> before = UniformFloats(values.size(), -100.0f, 100.0f, 2);
  std::vector<float> acc = before;
  DecodeAdd(codec, bytes.data(), acc.size(), acc.data());
  for (size_t i = 0; i < acc.size(); ++i) {
    const float plain = before[i] + decoded[i];
    if (codec == WireCodec::kInt8 && Bits(acc[i]) != Bits(plain)) {
      const float fused =
          std::fma(static_cast<float>(Int8CodeAt(bytes, i)), Int8Scale(bytes.data()), before[i]);
      ASSERT_EQ(Bits(acc[i]), Bits(fused)) << i;
    } else {
      ASSERT_EQ(Bits(acc[i]), Bits(plain)) << i;
    }
  }
}

TEST_P(CodecTest, EncodingAndDecodingTwiceGiveIdenticalBits) {
  const WireCodec codec = GetParam();
  std::vector<float> values = UniformFloats(777, -1e3f, 1e3f, 3);
  const std::vector<unsigned char> bytes = EncodeToVector(codec, values);
  EXPECT_EQ(EncodeToVector(codec, values), bytes);
  std::vector<float> first(values.size(), 1.0f);
  std::vector<float> second(values.size(), -7.0f);  // different garbage: overwritten
  Decode(codec, bytes.data(), values.size(), first.data());
  Decode(codec, bytes.data(), values.size(), second.data());
  EXPECT_TRUE(SameBits(first, second));
}

// Decode runs blocks of elements vectorised and the tail one by one; a prefix
// lands on a different split, and must not change a bit.
TEST_P(CodecTest, DecodingAPrefixGivesThePrefixBitForBit) {
  const WireCodec codec = GetParam();
  const std::vector<float> values = UniformFloats(300, -2.0f, 2.0f, 4);
  const std::vector<unsigned char> bytes = EncodeToVector(codec, values);
  const std::vector<float> all = DecodeToVector(codec, bytes, values.size());
  for (size_t prefix : {0, 1, 63, 64, 65, 129, 299}) {
    std::vector<float> part = DecodeToVector(codec, bytes, prefix);
    EXPECT_TRUE(SameBits(part, std::vector<float>(all.begin(), all.begin() + prefix))) << prefix;
  }
}

// int8 segments packed back to back leave scales at odd addresses.
TEST_P(CodecTest, EncodedBuffersNeedNoAlignment) {
  const WireCodec codec = GetParam();
  const std::vector<float> values = UniformFloats(131, -5.0f, 5.0f, 5);
  const std::vector<unsigned char> aligned = EncodeToVector(codec, values);
  std::vector<unsigned char> storage(aligned.size() + 1);
  unsigned char* odd = storage.data() + 1;
  Encode(codec, values.data(), values.size(), odd);
  EXPECT_EQ(std::vector<unsigned char>(odd, odd + aligned.size()), aligned);
  std::vector<float> decoded(values.size());
  Decode(codec, odd, values.size(), decoded.data());
  EXPECT_TRUE(SameBits(decoded, DecodeToVector(codec, aligned, values.size())));
  EXPECT_TRUE(ValidateEncoded(codec, odd, values.size()).ok());
}

TEST_P(CodecTest, ValidateEncodedAcceptsWhatEncodeWrites) {
  const WireCodec codec = GetParam();
  const std::vector<std::vector<float>> segments = {
      {},
      std::vector<float>(100, 0.0f),
      UniformFloats(100, -1.0f, 1.0f, 6),
      {1.0f, kNaN, 2.0f},
      {-kInf, 1.0f},
      {FLT_MAX, -FLT_MAX, 1e-30f},
      {1e-40f, -1e-38f},
  };
  for (const std::vector<float>& segment : segments) {
    const std::vector<unsigned char> bytes = EncodeToVector(codec, segment);
    EXPECT_TRUE(ValidateEncoded(codec, bytes.data(), segment.size()).ok())
        << ValidateEncoded(codec, bytes.data(), segment.size());
  }
}

// ---- kNone ----

TEST(NoneCodec, RoundTripsEveryBitExactly) {
  const std::vector<float> values = {
      0.0f, -0.0f, 1.0f, -kInf, kInf, std::bit_cast<float>(0x7fa00001u), 1e-45f, FLT_MAX, 0.1f};
  const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kNone, values);
  ASSERT_EQ(bytes.size(), values.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(bytes.data(), values.data(), bytes.size()), 0);
  EXPECT_TRUE(SameBits(DecodeToVector(WireCodec::kNone, bytes, values.size()), values));
}

// ---- kFloat16, kBFloat16 ----

struct SixteenBitFormat {
  WireCodec codec;
  uint16_t (*to_bits)(float);
  float (*from_bits)(uint16_t);
  double unit_roundoff;  // half an ulp, relative
  int min_normal_exponent;
  int max_exponent;
};

constexpr SixteenBitFormat kFloat16Format = {
    WireCodec::kFloat16, FloatToHalfBits, HalfBitsToFloat, 0x1p-11, -14, 15};
constexpr SixteenBitFormat kBFloat16Format = {
    WireCodec::kBFloat16, FloatToBFloat16Bits, BFloat16BitsToFloat, 0x1p-8, -126, 127};

void PrintTo(const SixteenBitFormat& format, std::ostream* os) {
  *os << WireCodecName(format.codec);
}

class SixteenBitCodecTest : public ::testing::TestWithParam<SixteenBitFormat> {};

std::string SixteenBitTestName(const ::testing::TestParamInfo<SixteenBitFormat>& info) {
  return std::string(WireCodecName(info.param.codec));
}

INSTANTIATE_TEST_SUITE_P(Formats, SixteenBitCodecTest,
                         ::testing::Values(kFloat16Format, kBFloat16Format), SixteenBitTestName);

TEST_P(SixteenBitCodecTest, MatchesTheScalarConversionsBitForBit) {
  const SixteenBitFormat& format = GetParam();
  // Every kind of float: random bit patterns (NaNs, infinities, subnormals)
  // and the edges.
  std::mt19937 rng(7);
  std::vector<float> values = {0.0f,     -0.0f,  kInf,    -kInf,    kNaN,     65504.0f,
                               65520.0f, 1e-45f, FLT_MAX, 0x1p-24f, 0x1p-25f, 1.0f + 0x1p-11f};
  for (int i = 0; i < 20000; ++i)
    values.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  const std::vector<unsigned char> bytes = EncodeToVector(format.codec, values);
  ASSERT_EQ(bytes.size(), 2 * values.size());
  const std::vector<float> decoded = DecodeToVector(format.codec, bytes, values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t sent;
    std::memcpy(&sent, bytes.data() + 2 * i, sizeof(sent));
    const uint16_t expected = format.to_bits(values[i]);
    ASSERT_EQ(sent, expected) << std::hex << Bits(values[i]);
    ASSERT_EQ(Bits(decoded[i]), Bits(format.from_bits(expected))) << std::hex << Bits(values[i]);
  }
}

TEST_P(SixteenBitCodecTest, RelativeErrorOfNormalsIsAtMostHalfAnUlp) {
  const SixteenBitFormat& format = GetParam();
  const std::vector<float> values =
      LogUniformFloats(20000, format.min_normal_exponent, format.max_exponent - 1, 8);
  const std::vector<float> decoded =
      DecodeToVector(format.codec, EncodeToVector(format.codec, values), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double error = std::fabs(static_cast<double>(decoded[i]) - values[i]);
    ASSERT_LE(error, format.unit_roundoff * std::fabs(values[i])) << values[i];
  }
}

// ---- kInt8 ----

TEST(Int8Codec, ScaleIsMaxMagnitudeOver127AndTheLargestMapsTo127) {
  const std::vector<float> values = {0.5f, -3.0f, 1.5f, 3.0f};
  const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, values);
  ASSERT_EQ(bytes.size(), 4u + values.size());
  EXPECT_EQ(Int8Scale(bytes.data()), 3.0f / 127.0f);
  EXPECT_EQ(Int8CodeAt(bytes, 1), -127);
  EXPECT_EQ(Int8CodeAt(bytes, 3), 127);
  EXPECT_EQ(Int8CodeAt(bytes, 0), 21);  // 0.5 * 127 / 3 = 21.17
  EXPECT_EQ(Int8CodeAt(bytes, 2), 64);  // 63.5: a tie, to even
}

TEST(Int8Codec, TiesRoundToEven) {
  // max 127 makes the scale exactly 1, so x / scale is x.
  const std::vector<float> values = {127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 1.5f, -126.5f};
  const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, values);
  ASSERT_EQ(Int8Scale(bytes.data()), 1.0f);
  const int expected[] = {127, 2, 4, -2, -4, 0, 0, 2, -126};
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(Int8CodeAt(bytes, i), expected[i]) << i;
}

TEST(Int8Codec, ErrorOfEveryElementIsAtMostHalfAStep) {
  for (size_t count : {1, 7, 64, 65, 1000, 4099}) {
    const std::vector<float> values =
        UniformFloats(count, -5.0f, 5.0f, static_cast<uint32_t>(count));
    const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, values);
    const double scale = Int8Scale(bytes.data());
    const std::vector<float> decoded = DecodeToVector(WireCodec::kInt8, bytes, count);
    for (size_t i = 0; i < count; ++i) {
      ASSERT_GE(Int8CodeAt(bytes, i), -127);
      // Half a step, plus the float rounding of x / scale and of q * scale.
      ASSERT_LE(std::fabs(static_cast<double>(decoded[i]) - values[i]), scale * (0.5 + 0x1p-16))
          << "count " << count << " element " << i;
    }
  }
}

TEST(Int8Codec, ZeroSegmentRoundTripsToZeros) {
  const std::vector<float> values = {0.0f, -0.0f, 0.0f};
  const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, values);
  EXPECT_EQ(Bits(Int8Scale(bytes.data())), 0u);
  EXPECT_EQ(std::vector<unsigned char>(bytes.begin() + 4, bytes.end()),
            std::vector<unsigned char>(3, 0));
  // -0 comes back as +0, as documented.
  EXPECT_TRUE(SameBits(DecodeToVector(WireCodec::kInt8, bytes, 3), std::vector<float>(3, 0.0f)));
}

TEST(Int8Codec, SegmentTooSmallForANormalScaleIsSentAsZeros) {
  const std::vector<float> tiny = {1e-37f, -5e-38f, 0.0f};
  const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, tiny);
  EXPECT_EQ(Bits(Int8Scale(bytes.data())), 0u);
  EXPECT_TRUE(SameBits(DecodeToVector(WireCodec::kInt8, bytes, 3), std::vector<float>(3, 0.0f)));
  // At the threshold the scale is the smallest normal float.
  const std::vector<float> edge = {127.0f * FLT_MIN};
  EXPECT_EQ(Int8Scale(EncodeToVector(WireCodec::kInt8, edge).data()), FLT_MIN);
}

TEST(Int8Codec, LargestFloatsStayFinite) {
  const std::vector<float> values = {FLT_MAX, -FLT_MAX, 1e30f};
  const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, values);
  const std::vector<float> decoded = DecodeToVector(WireCodec::kInt8, bytes, values.size());
  for (float value : decoded) EXPECT_TRUE(std::isfinite(value)) << value;
  EXPECT_GT(decoded[0], 0.99f * FLT_MAX);
  EXPECT_LT(decoded[1], -0.99f * FLT_MAX);
}

TEST(Int8Codec, NaNOrInfinityAnywhereMakesTheWholeSegmentNaN) {
  for (float bad : {kNaN, -kNaN, kInf, -kInf, std::bit_cast<float>(0x7f800001u)}) {
    // In the vectorised blocks and in the tail.
    for (size_t position : {0, 5, 63, 64, 99}) {
      std::vector<float> values = UniformFloats(100, -1.0f, 1.0f, 9);
      values[position] = bad;
      const std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, values);
      EXPECT_EQ(Bits(Int8Scale(bytes.data())), kInt8NaNScaleBits);
      EXPECT_EQ(std::vector<unsigned char>(bytes.begin() + 4, bytes.end()),
                std::vector<unsigned char>(100, 0));
      EXPECT_TRUE(ValidateEncoded(WireCodec::kInt8, bytes.data(), values.size()).ok());
      const std::vector<float> decoded = DecodeToVector(WireCodec::kInt8, bytes, values.size());
      std::vector<float> acc(values.size(), 1.0f);
      DecodeAdd(WireCodec::kInt8, bytes.data(), acc.size(), acc.data());
      for (size_t i = 0; i < values.size(); ++i) {
        ASSERT_TRUE(std::isnan(decoded[i])) << "bad " << bad << " at " << position << ", " << i;
        ASSERT_TRUE(std::isnan(acc[i])) << "bad " << bad << " at " << position << ", " << i;
      }
    }
  }
}

// ---- ValidateEncoded ----

TEST(ValidateEncoded, RejectsACorruptInt8ScaleWithDataLoss) {
  std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, {1.0f, -0.5f});
  for (uint32_t scale_bits : {Bits(-1.0f), Bits(-0.0f), Bits(kInf), Bits(-kInf), Bits(1e-40f),
                              Bits(FLT_MAX), 0x7f800001u, 0xffc00000u, 0x7fc00001u}) {
    std::memcpy(bytes.data(), &scale_bits, sizeof(scale_bits));
    const absl::Status status = ValidateEncoded(WireCodec::kInt8, bytes.data(), 2);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << std::hex << scale_bits;
    EXPECT_NE(status.message().find("scale"), absl::string_view::npos) << status;
  }
}

TEST(ValidateEncoded, RejectsInt8CodeMinus128WithDataLoss) {
  std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, {1.0f, -0.5f, 0.25f});
  ASSERT_TRUE(ValidateEncoded(WireCodec::kInt8, bytes.data(), 3).ok());
  bytes[4 + 2] = 0x80;
  const absl::Status status = ValidateEncoded(WireCodec::kInt8, bytes.data(), 3);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("-128"), absl::string_view::npos) << status;
}

TEST(ValidateEncoded, RejectsNonzeroInt8CodesUnderAZeroOrNaNScale) {
  for (const std::vector<float>& values :
       {std::vector<float>{0.0f, 0.0f}, std::vector<float>{kNaN, 1.0f}}) {
    std::vector<unsigned char> bytes = EncodeToVector(WireCodec::kInt8, values);
    ASSERT_TRUE(ValidateEncoded(WireCodec::kInt8, bytes.data(), 2).ok());
    bytes[4 + 1] = 3;
    const absl::Status status = ValidateEncoded(WireCodec::kInt8, bytes.data(), 2);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(status.message().find("nonzero codes"), absl::string_view::npos) << status;
  }
}

// ---- ErrorFeedback ----

TEST(ErrorFeedback, StartsAtZeroAndResetZeroesIt) {
  ErrorFeedback feedback(5);
  EXPECT_EQ(feedback.count(), 5u);
  for (float residual : feedback.residual()) EXPECT_EQ(residual, 0.0f);
  const std::vector<float> data = {0.001f, 1.0f, 0.3f, -0.7f, 0.011f};
  std::vector<unsigned char> bytes(EncodedBytes(WireCodec::kInt8, data.size()));
  feedback.Encode(WireCodec::kInt8, data.data(), 0, data.size(), bytes.data());
  EXPECT_NE(feedback.residual()[0], 0.0f);
  feedback.Reset();
  for (float residual : feedback.residual()) EXPECT_EQ(residual, 0.0f);
}

// Sends the same vector round after round with and without feedback. With it,
// what arrived in total trails what was sent by at most one quantization
// step, however many rounds; without it the error grows every round.
TEST(ErrorFeedback, Int8RunningSumOfDecodedTracksTheInputs) {
  std::vector<float> data = UniformFloats(200, -1.0f, 1.0f, 10);
  data[0] = 1.0f;
  data[1] = 0.001f;  // under half a step (1/254): plain int8 never sends it
  data[2] = -0.0042f;
  const size_t count = data.size();
  constexpr int kRounds = 2000;
  ErrorFeedback feedback(count);
  std::vector<unsigned char> bytes(EncodedBytes(WireCodec::kInt8, count));
  std::vector<double> sent_sum(count, 0.0), with_feedback_sum(count, 0.0), plain_sum(count, 0.0);
  std::vector<float> decoded(count);
  for (int round = 0; round < kRounds; ++round) {
    feedback.Encode(WireCodec::kInt8, data.data(), 0, count, bytes.data());
    const float scale = Int8Scale(bytes.data());
    Decode(WireCodec::kInt8, bytes.data(), count, decoded.data());
    for (size_t i = 0; i < count; ++i) {
      sent_sum[i] += data[i];
      with_feedback_sum[i] += decoded[i];
      ASSERT_LE(std::fabs(feedback.residual()[i]), scale * (0.5 + 0x1p-16)) << round << " " << i;
      ASSERT_LE(std::fabs(sent_sum[i] - with_feedback_sum[i]), scale) << round << " " << i;
    }
    Encode(WireCodec::kInt8, data.data(), count, bytes.data());
    Decode(WireCodec::kInt8, bytes.data(), count, decoded.data());
    for (size_t i = 0; i < count; ++i) plain_sum[i] += decoded[i];
  }
  // Without feedback, 0.001 never arrives: the whole sum is missing.
  EXPECT_EQ(plain_sum[1], 0.0);
  EXPECT_NEAR(with_feedback_sum[1], kRounds * 0.001, 1.0 / 127);
}

TEST_P(SixteenBitCodecTest, RunningSumOfDecodedWithFeedbackTracksTheInputs) {
  const SixteenBitFormat& format = GetParam();
  // 1e-9 is below half of fp16's smallest subnormal: plain fp16 never sends it.
  const std::vector<float> data = {0.1f, 1.0f / 3.0f, -2.0f / 3.0f, 1e-9f, 1234.567f};
  const size_t count = data.size();
  constexpr int kRounds = 3000;
  ErrorFeedback feedback(count);
  std::vector<unsigned char> bytes(EncodedBytes(format.codec, count));
  std::vector<float> decoded(count);
  std::vector<double> sent_sum(count, 0.0), with_feedback_sum(count, 0.0), plain_sum(count, 0.0);
  for (int round = 0; round < kRounds; ++round) {
    feedback.Encode(format.codec, data.data(), 0, count, bytes.data());
    Decode(format.codec, bytes.data(), count, decoded.data());
    for (size_t i = 0; i < count; ++i) {
      sent_sum[i] += data[i];
      with_feedback_sum[i] += decoded[i];
    }
    Encode(format.codec, data.data(), count, bytes.data());
    Decode(format.codec, bytes.data(), count, decoded.data());
    for (size_t i = 0; i < count; ++i) plain_sum[i] += decoded[i];
  }
  double worst_plain_steps = 0;
  for (size_t i = 0; i < count; ++i) {
    // One step of the 16-bit format at data[i] (an ulp; 2^-24 below fp16's normals).
    const uint16_t bits = format.to_bits(std::fabs(data[i]));
    const double step = format.from_bits(bits + 1) - format.from_bits(bits);
    EXPECT_LE(std::fabs(sent_sum[i] - with_feedback_sum[i]), step) << data[i];
    worst_plain_steps = std::max(worst_plain_steps, std::fabs(sent_sum[i] - plain_sum[i]) / step);
  }
  EXPECT_GT(worst_plain_steps, 10.0);  // the test would notice missing feedback
}

TEST(ErrorFeedback, EncodesASegmentAgainstTheResidualsAtItsOffset) {
  const std::vector<float> data = UniformFloats(10, -1.0f, 1.0f, 11);
  ErrorFeedback feedback(30);
  std::vector<unsigned char> bytes(EncodedBytes(WireCodec::kInt8, data.size()));
  feedback.Encode(WireCodec::kInt8, data.data(), 20, data.size(), bytes.data());
  // Without residuals yet, the bytes are plain Encode's.
  EXPECT_EQ(bytes, EncodeToVector(WireCodec::kInt8, data));
  const std::vector<float> decoded = DecodeToVector(WireCodec::kInt8, bytes, data.size());
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(feedback.residual()[i], 0.0f) << i;
  for (size_t i = 0; i < data.size(); ++i) {
    // data - q * scale, possibly computed as one fused multiply-add.
    const float residual = feedback.residual()[20 + i];
    const float fused =
        std::fma(-static_cast<float>(Int8CodeAt(bytes, i)), Int8Scale(bytes.data()), data[i]);
    EXPECT_TRUE(residual == data[i] - decoded[i] || residual == fused)
        << i << ": " << residual << " vs " << data[i] - decoded[i];
  }
  // The next call adds the residuals in.
  std::vector<float> with_residual(data.size());
  for (size_t i = 0; i < data.size(); ++i) with_residual[i] = data[i] + feedback.residual()[20 + i];
  feedback.Encode(WireCodec::kInt8, data.data(), 20, data.size(), bytes.data());
  EXPECT_EQ(bytes, EncodeToVector(WireCodec::kInt8, with_residual));
}

TEST(ErrorFeedback, NonFiniteValuesLeaveZeroResidualsNotPoisonedOnes) {
  const std::vector<float> good = {0.3f, -1.0f, 0.001f, 0.77f};
  std::vector<float> bad = good;
  bad[1] = kNaN;
  for (WireCodec codec : {WireCodec::kInt8, WireCodec::kFloat16, WireCodec::kBFloat16}) {
    ErrorFeedback feedback(good.size());
    std::vector<unsigned char> bytes(EncodedBytes(codec, good.size()));
    feedback.Encode(codec, good.data(), 0, good.size(), bytes.data());
    feedback.Encode(codec, bad.data(), 0, bad.size(), bytes.data());
    for (float residual : feedback.residual()) {
      EXPECT_TRUE(std::isfinite(residual)) << WireCodecName(codec);
      if (codec == WireCodec::kInt8) {
        EXPECT_EQ(residual, 0.0f);  // the whole segment was lost
      }
    }
    EXPECT_EQ(feedback.residual()[1], 0.0f) << WireCodecName(codec);
  }
  // fp16 overflow: 1e5 becomes infinity; its residual is 0, not -infinity.
  ErrorFeedback feedback(2);
  const float overflowing[] = {1e5f, 0.1f};
  std::vector<unsigned char> bytes(EncodedBytes(WireCodec::kFloat16, 2));
  feedback.Encode(WireCodec::kFloat16, overflowing, 0, 2, bytes.data());
  EXPECT_EQ(feedback.residual()[0], 0.0f);
  EXPECT_NE(feedback.residual()[1], 0.0f);
}

TEST(CodecDeathTest, AnUnknownCodecValueIsABug) {
  const float data[1] = {1.0f};
  unsigned char bytes[8];
  EXPECT_DEATH(EncodedBytes(static_cast<WireCodec>(9), 1), "invalid WireCodec 9");
  EXPECT_DEATH(Encode(static_cast<WireCodec>(4), data, 1, bytes), "invalid WireCodec 4");
}

TEST(CodecDeathTest, AnErrorFeedbackRangeOutsideTheBufferIsABug) {
  ErrorFeedback feedback(10);
  const float data[4] = {};
  unsigned char bytes[8];
  EXPECT_DEATH(feedback.Encode(WireCodec::kInt8, data, 8, 4, bytes), "outside an ErrorFeedback");
}

// ---- a ring all-reduce, simulated ----

// world_size ranks, each with its own buffer and ErrorFeedback. Reduce-scatter:
// at step k rank r encodes (with feedback) segment r - k and rank r + 1
// DecodeAdds it. Then the owner of each reduced segment encodes it once (with
// feedback) and every rank, the owner too, Decodes those bytes.
void SimulatedRingAllReduce(WireCodec codec, std::vector<std::vector<float>>& buffers,
                            std::vector<ErrorFeedback>& feedback) {
  const size_t world_size = buffers.size();
  const size_t count = buffers[0].size();
  auto segment_begin = [&](size_t s) { return s * count / world_size; };
  auto segment_size = [&](size_t s) { return segment_begin(s + 1) - segment_begin(s); };
  std::vector<unsigned char> bytes;
  for (size_t step = 0; step + 1 < world_size; ++step) {
    for (size_t rank = 0; rank < world_size; ++rank) {
      const size_t s = (rank + world_size - step) % world_size;
      bytes.resize(EncodedBytes(codec, segment_size(s)));
      feedback[rank].Encode(codec, buffers[rank].data() + segment_begin(s), segment_begin(s),
                            segment_size(s), bytes.data());
      ASSERT_TRUE(ValidateEncoded(codec, bytes.data(), segment_size(s)).ok());
      DecodeAdd(codec, bytes.data(), segment_size(s),
                buffers[(rank + 1) % world_size].data() + segment_begin(s));
    }
  }
  for (size_t owner = 0; owner < world_size; ++owner) {
    const size_t s = (owner + 1) % world_size;
    bytes.resize(EncodedBytes(codec, segment_size(s)));
    feedback[owner].Encode(codec, buffers[owner].data() + segment_begin(s), segment_begin(s),
                           segment_size(s), bytes.data());
    for (size_t rank = 0; rank < world_size; ++rank) {
      Decode(codec, bytes.data(), segment_size(s), buffers[rank].data() + segment_begin(s));
    }
  }
}

// Every rank ends each all-reduce with the same bits, and over many rounds
// nothing is lost: the running sum of the results plus every rank's residual
// is the running sum of all inputs (up to float32 rounding).
TEST_P(CodecTest, SimulatedRingAllReduceIsBitIdenticalOnEveryRankAndLosesNothing) {
  const WireCodec codec = GetParam();
  constexpr size_t kWorldSize = 4;
  constexpr size_t kCount = 1003;  // uneven segments, none a multiple of the block
  constexpr int kRounds = 100;
  std::vector<ErrorFeedback> feedback(kWorldSize, ErrorFeedback(kCount));
  std::vector<double> true_sum(kCount, 0.0), result_sum(kCount, 0.0);
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::vector<float>> buffers;
    for (size_t rank = 0; rank < kWorldSize; ++rank) {
      buffers.push_back(
          UniformFloats(kCount, -1.0f, 1.0f, static_cast<uint32_t>(round * kWorldSize + rank)));
      buffers.back()[7] = 1e-4f;  // too small for int8 next to values near 1
      for (size_t i = 0; i < kCount; ++i) true_sum[i] += buffers[rank][i];
    }
    SimulatedRingAllReduce(codec, buffers, feedback);
    for (size_t rank = 1; rank < kWorldSize; ++rank) {
      ASSERT_TRUE(SameBits(buffers[rank], buffers[0])) << "round " << round << " rank " << rank;
    }
    for (size_t i = 0; i < kCount; ++i) result_sum[i] += buffers[0][i];
  }
  for (size_t i = 0; i < kCount; ++i) {
    double residuals = 0;
    for (const ErrorFeedback& rank_feedback : feedback) residuals += rank_feedback.residual()[i];
    EXPECT_NEAR(result_sum[i] + residuals, true_sum[i], 1e-3) << i;
  }
}

}  // namespace
}  // namespace potluck
