#include "collectives/codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

#include "common/check.h"
#include "common/dtype.h"

namespace potluck {

// The layouts in codec.h are host byte order; this makes that little-endian.
static_assert(std::endian::native == std::endian::little,
              "potluck's wire formats are little-endian");

namespace {

constexpr size_t kScaleBytes = sizeof(float);
constexpr int32_t kInt8MaxCode = 127;
constexpr float kFloatMin = std::numeric_limits<float>::min();  // smallest normal
constexpr float kFloatMax = std::numeric_limits<float>::max();
// Below this max|x| a scale would be subnormal: the segment is sent as zeros.
constexpr float kMinInt8Magnitude = static_cast<float>(kInt8MaxCode) * kFloatMin;
constexpr uint32_t kInt8NaNScaleBits = 0x7fc00000u;
constexpr uint32_t kFloatMagnitudeMask = 0x7fffffffu;
constexpr int32_t kFloatInfBits = 0x7f800000;
// Adding and subtracting 1.5 * 2^23 rounds any |y| < 2^22 to an integer in
// the current rounding mode (to nearest even unless someone changed it). Unlike
// std::nearbyint it vectorises without SSE4.1.
constexpr float kRoundToIntMagic = 12582912.0f;

// GCC at -O2 vectorises a loop only when its trip count is a known multiple
// of the vector width and it needs no run-time alias checks (the "very cheap"
// cost model). So the hot loops run their body over fixed blocks of kBlock
// elements through __restrict pointers, then over the tail one by one; both
// compute the same IEEE operations, so the bits do not depend on the split.
// GCC forgets a function's __restrict when it inlines it, hence the
// [[gnu::noinline]] on those functions (one call per segment).
constexpr size_t kBlock = 64;

template <typename Body>
void ForEachInBlocks(size_t count, Body body) {
  size_t i = 0;
  for (; count - i >= kBlock; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) body(i + j);
  }
  for (; i < count; ++i) body(i);
}

unsigned char* Bytes(void* p) { return static_cast<unsigned char*>(p); }
const unsigned char* Bytes(const void* p) { return static_cast<const unsigned char*>(p); }

// The value that element i stands for: the input, plus the residual that error
// feedback carries into it.
template <bool kFeedback>
float Value(const float* in, const float* residual, size_t i) {
  if constexpr (kFeedback) {
    return in[i] + residual[i];
  } else {
    return in[i];
  }
}

// ---- kNone ----

template <bool kFeedback>
[[gnu::noinline]] void EncodeNone(const float* __restrict in, float* __restrict residual,
                                  size_t count, unsigned char* __restrict out) {
  if constexpr (kFeedback) {
    ForEachInBlocks(count, [&](size_t i) {
      const float value = in[i] + residual[i];
      std::memcpy(out + i * sizeof(float), &value, sizeof(float));
      residual[i] = 0.0f;
    });
  } else if (count > 0) {
    std::memcpy(out, in, count * sizeof(float));
  }
}

void DecodeNone(const unsigned char* in, size_t count, float* out) {
  if (count > 0) std::memcpy(out, in, count * sizeof(float));
}

[[gnu::noinline]] void DecodeAddNone(const unsigned char* __restrict in, size_t count,
                                     float* __restrict acc) {
  ForEachInBlocks(count, [&](size_t i) {
    float value;
    std::memcpy(&value, in + i * sizeof(float), sizeof(float));
    acc[i] += value;
  });
}

// ---- kFloat16, kBFloat16: the conversions of common/dtype.h ----
// (Out-of-line calls per element: these loops do not vectorise.)

struct Float16Format {
  static uint16_t ToBits(float value) { return FloatToHalfBits(value); }
  static float FromBits(uint16_t bits) { return HalfBitsToFloat(bits); }
};

struct BFloat16Format {
  static uint16_t ToBits(float value) { return FloatToBFloat16Bits(value); }
  static float FromBits(uint16_t bits) { return BFloat16BitsToFloat(bits); }
};

uint16_t Load16(const unsigned char* in, size_t i) {
  uint16_t bits;
  std::memcpy(&bits, in + i * sizeof(uint16_t), sizeof(uint16_t));
  return bits;
}

template <typename Format, bool kFeedback>
void Encode16(const float* __restrict in, float* __restrict residual, size_t count,
              unsigned char* __restrict out) {
  for (size_t i = 0; i < count; ++i) {
    const float value = Value<kFeedback>(in, residual, i);
    const uint16_t bits = Format::ToBits(value);
    std::memcpy(out + i * sizeof(uint16_t), &bits, sizeof(uint16_t));
    if constexpr (kFeedback) {
      const float lost = value - Format::FromBits(bits);
      residual[i] = std::fabs(lost) <= kFloatMax ? lost : 0.0f;  // not NaN or infinity
    }
  }
}

template <typename Format>
void Decode16(const unsigned char* __restrict in, size_t count, float* __restrict out) {
  for (size_t i = 0; i < count; ++i) out[i] = Format::FromBits(Load16(in, i));
}

template <typename Format>
void DecodeAdd16(const unsigned char* __restrict in, size_t count, float* __restrict acc) {
  for (size_t i = 0; i < count; ++i) acc[i] += Format::FromBits(Load16(in, i));
}

// ---- kInt8 ----

void StoreScale(float scale, unsigned char* out) { std::memcpy(out, &scale, sizeof(float)); }

float LoadScale(const unsigned char* in) {
  float scale;
  std::memcpy(&scale, in, sizeof(float));
  return scale;
}

// Whether +-127 * scale is finite (false for NaN and infinity too).
bool DecodesFinite(float scale) {
  return std::fabs(scale * static_cast<float>(kInt8MaxCode)) <= kFloatMax;
}

// The bits of a float with the sign cleared. For these, integer order is
// float order and every NaN or infinity lies above every finite value.
int32_t MagnitudeBits(float value) {
  return static_cast<int32_t>(std::bit_cast<uint32_t>(value) & kFloatMagnitudeMask);
}

// max MagnitudeBits(value i): one branch-free integer reduction finds both
// max|value| and whether any value is not finite. It keeps kLanes running
// maxima (a few vectors' worth) because one chain of compare-and-select is
// latency-bound (about 1.4x faster with SSE2).
template <bool kFeedback>
int32_t MaxMagnitudeBits(const float* __restrict in, const float* __restrict residual,
                         size_t count) {
  constexpr size_t kLanes = 16;
  int32_t lane_max[kLanes] = {};
  size_t i = 0;
  for (; count - i >= kLanes; i += kLanes) {
    for (size_t lane = 0; lane < kLanes; ++lane) {
      lane_max[lane] =
          std::max(lane_max[lane], MagnitudeBits(Value<kFeedback>(in, residual, i + lane)));
    }
  }
  int32_t max_bits = 0;
  for (; i < count; ++i) {
    max_bits = std::max(max_bits, MagnitudeBits(Value<kFeedback>(in, residual, i)));
  }
  for (int32_t lane_bits : lane_max) max_bits = std::max(max_bits, lane_bits);
  return max_bits;
}

template <bool kFeedback>
[[gnu::noinline]] void EncodeInt8(const float* __restrict in, float* __restrict residual,
                                  size_t count, unsigned char* __restrict out) {
  const int32_t max_bits = MaxMagnitudeBits<kFeedback>(in, residual, count);
  unsigned char* __restrict codes = out + kScaleBytes;
  if (max_bits >= kFloatInfBits) {  // NaN or infinity: the whole segment becomes NaN
    StoreScale(std::bit_cast<float>(kInt8NaNScaleBits), out);
    if (count > 0) std::memset(codes, 0, count);
    if constexpr (kFeedback) std::fill(residual, residual + count, 0.0f);
    return;
  }
  const float max_magnitude = std::bit_cast<float>(max_bits);
  if (max_magnitude < kMinInt8Magnitude) {  // zeros, or too small for a normal scale
    StoreScale(0.0f, out);
    if (count > 0) std::memset(codes, 0, count);
    if constexpr (kFeedback) {
      ForEachInBlocks(count, [&](size_t i) { residual[i] += in[i]; });  // all of it was lost
    }
    return;
  }
  float scale = max_magnitude / static_cast<float>(kInt8MaxCode);
  if (!DecodesFinite(scale)) {  // max|x| near FLT_MAX, scale rounded up: one ulp down
    scale = std::bit_cast<float>(std::bit_cast<uint32_t>(scale) - 1);
  }
  StoreScale(scale, out);
  ForEachInBlocks(count, [&](size_t i) {
    const float value = Value<kFeedback>(in, residual, i);
    const float rounded = (value / scale + kRoundToIntMagic) - kRoundToIntMagic;
    // |value / scale| <= 127 up to rounding, so the conversion is in range; the
    // clamp (on integers: float min/max do not vectorise) rules out -128.
    const int32_t code = std::clamp(static_cast<int32_t>(rounded), -kInt8MaxCode, kInt8MaxCode);
    codes[i] = static_cast<unsigned char>(code);
    if constexpr (kFeedback) {
      // Minus what Decode gives (exactly, where a compiler fuses this into an FMA).
      residual[i] = value - static_cast<float>(code) * scale;
    }
  });
}

float Int8Code(const unsigned char* codes, size_t i) {
  return static_cast<float>(static_cast<int8_t>(codes[i]));
}

[[gnu::noinline]] void DecodeInt8(const unsigned char* __restrict in, size_t count,
                                  float* __restrict out) {
  const float scale = LoadScale(in);
  const unsigned char* codes = in + kScaleBytes;
  // A NaN scale makes every element NaN, 0 * NaN included.
  ForEachInBlocks(count, [&](size_t i) { out[i] = Int8Code(codes, i) * scale; });
}

[[gnu::noinline]] void DecodeAddInt8(const unsigned char* __restrict in, size_t count,
                                     float* __restrict acc) {
  const float scale = LoadScale(in);
  const unsigned char* codes = in + kScaleBytes;
  ForEachInBlocks(count, [&](size_t i) { acc[i] += Int8Code(codes, i) * scale; });
}

absl::Status ValidateInt8(const unsigned char* in, size_t count) {
  const float scale = LoadScale(in);
  const uint32_t scale_bits = std::bit_cast<uint32_t>(scale);
  const bool zero_or_nan = scale_bits == 0 || scale_bits == kInt8NaNScaleBits;
  if (!zero_or_nan && !(scale >= kFloatMin && DecodesFinite(scale))) {
    return absl::DataLossError(absl::StrCat("int8 segment of ", count, " elements has scale ",
                                            scale, " (bits 0x", absl::Hex(scale_bits),
                                            "); a scale is 0, NaN 0x7fc00000, or at least ",
                                            kFloatMin, " with 127 * scale finite"));
  }
  const unsigned char* codes = in + kScaleBytes;
  unsigned char any_bits = 0;
  unsigned char any_minus_128 = 0;
  ForEachInBlocks(count, [&](size_t i) {
    any_bits |= codes[i];
    any_minus_128 |= static_cast<unsigned char>(codes[i] == 0x80);
  });
  if (any_minus_128 != 0) {
    return absl::DataLossError(
        absl::StrCat("int8 segment of ", count, " elements holds code -128, outside [-127, 127]"));
  }
  if (zero_or_nan && any_bits != 0) {
    return absl::DataLossError(absl::StrCat("int8 segment of ", count, " elements has scale ",
                                            scale, " but nonzero codes"));
  }
  return absl::OkStatus();
}

// ---- dispatch ----

[[noreturn]] void InvalidCodec(WireCodec codec) {
  POTLUCK_CHECK(false) << "invalid WireCodec " << static_cast<int>(codec);
  std::abort();  // not reached: the check aborts
}

template <bool kFeedback>
void EncodeWith(WireCodec codec, const float* in, float* residual, size_t count, void* out) {
  switch (codec) {
    case WireCodec::kNone:
      return EncodeNone<kFeedback>(in, residual, count, Bytes(out));
    case WireCodec::kFloat16:
      return Encode16<Float16Format, kFeedback>(in, residual, count, Bytes(out));
    case WireCodec::kBFloat16:
      return Encode16<BFloat16Format, kFeedback>(in, residual, count, Bytes(out));
    case WireCodec::kInt8:
      return EncodeInt8<kFeedback>(in, residual, count, Bytes(out));
  }
  InvalidCodec(codec);
}

}  // namespace

absl::string_view WireCodecName(WireCodec codec) {
  switch (codec) {
    case WireCodec::kNone:
      return "none";
    case WireCodec::kFloat16:
      return "fp16";
    case WireCodec::kBFloat16:
      return "bf16";
    case WireCodec::kInt8:
      return "int8";
  }
  return "invalid";
}

absl::StatusOr<WireCodec> ParseWireCodec(absl::string_view name) {
  for (WireCodec codec :
       {WireCodec::kNone, WireCodec::kFloat16, WireCodec::kBFloat16, WireCodec::kInt8}) {
    if (name == WireCodecName(codec)) return codec;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown wire codec '", name, "' (known: none, fp16, bf16, int8)"));
}

bool IsValidWireCodec(uint8_t value) { return value <= static_cast<uint8_t>(WireCodec::kInt8); }

size_t EncodedBytes(WireCodec codec, size_t count) {
  switch (codec) {
    case WireCodec::kNone:
      return count * sizeof(float);
    case WireCodec::kFloat16:
    case WireCodec::kBFloat16:
      return count * sizeof(uint16_t);
    case WireCodec::kInt8:
      return kScaleBytes + count;
  }
  InvalidCodec(codec);
}

void Encode(WireCodec codec, const float* in, size_t count, void* out) {
  EncodeWith</*kFeedback=*/false>(codec, in, /*residual=*/nullptr, count, out);
}

void Decode(WireCodec codec, const void* in, size_t count, float* out) {
  switch (codec) {
    case WireCodec::kNone:
      return DecodeNone(Bytes(in), count, out);
    case WireCodec::kFloat16:
      return Decode16<Float16Format>(Bytes(in), count, out);
    case WireCodec::kBFloat16:
      return Decode16<BFloat16Format>(Bytes(in), count, out);
    case WireCodec::kInt8:
      return DecodeInt8(Bytes(in), count, out);
  }
  InvalidCodec(codec);
}

void DecodeAdd(WireCodec codec, const void* in, size_t count, float* acc) {
  switch (codec) {
    case WireCodec::kNone:
      return DecodeAddNone(Bytes(in), count, acc);
    case WireCodec::kFloat16:
      return DecodeAdd16<Float16Format>(Bytes(in), count, acc);
    case WireCodec::kBFloat16:
      return DecodeAdd16<BFloat16Format>(Bytes(in), count, acc);
    case WireCodec::kInt8:
      return DecodeAddInt8(Bytes(in), count, acc);
  }
  InvalidCodec(codec);
}

absl::Status ValidateEncoded(WireCodec codec, const void* in, size_t count) {
  switch (codec) {
    case WireCodec::kNone:
    case WireCodec::kFloat16:
    case WireCodec::kBFloat16:
      return absl::OkStatus();
    case WireCodec::kInt8:
      return ValidateInt8(Bytes(in), count);
  }
  InvalidCodec(codec);
}

ErrorFeedback::ErrorFeedback(size_t count) : residual_(count, 0.0f) {}

void ErrorFeedback::Reset() { std::fill(residual_.begin(), residual_.end(), 0.0f); }

void ErrorFeedback::Encode(WireCodec codec, const float* data, size_t offset, size_t count,
                           void* out) {
  POTLUCK_CHECK(offset <= residual_.size() && count <= residual_.size() - offset)
      << "elements [" << offset << ", " << offset + count << ") outside an ErrorFeedback of "
      << residual_.size();
  EncodeWith</*kFeedback=*/true>(codec, data, residual_.data() + offset, count, out);
}

}  // namespace potluck
