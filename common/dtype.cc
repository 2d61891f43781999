#include "common/dtype.h"

#include <bit>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

#include "common/check.h"

namespace potluck {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
    case DType::kInt8:
      return 1;
  }
  POTLUCK_CHECK(false) << "invalid DType " << static_cast<int>(dtype);
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kFloat64:
      return "float64";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
    case DType::kInt8:
      return "int8";
  }
  return "invalid";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  struct Alias {
    absl::string_view name;
    DType dtype;
  };
  static constexpr Alias kAliases[] = {
      {"F32", DType::kFloat32}, {"F16", DType::kFloat16}, {"BF16", DType::kBFloat16},
      {"F64", DType::kFloat64}, {"I32", DType::kInt32},   {"I64", DType::kInt64},
      {"U8", DType::kUInt8},    {"I8", DType::kInt8},
  };
  for (DType dtype : kAllDTypes) {
    if (name == DTypeName(dtype)) return dtype;
  }
  for (const Alias& alias : kAliases) {
    if (name == alias.name) return alias.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}

bool IsValidDType(uint8_t value) { return value <= static_cast<uint8_t>(DType::kInt8); }

namespace {

constexpr uint32_t kFloatSignMask = 0x80000000u;
constexpr uint32_t kFloatInfBits = 0x7f800000u;
// 65520 = the midpoint between float16's largest finite value (65504) and
// 65536; ties go to the even pattern, which is infinity.
constexpr uint32_t kHalfOverflowBits = 0x477ff000u;
// 2^-14, float16's smallest normal value.
constexpr uint32_t kHalfMinNormalBits = 0x38800000u;
// (127 - 15) << 23: moves a float exponent to the float16 bias.
constexpr uint32_t kRebiasBits = 0x38000000u;

// Shifts `value` right by `shift` bits, rounding to nearest, ties to even.
uint32_t ShiftRightRoundEven(uint32_t value, uint32_t shift) {
  const uint32_t result = value >> shift;
  const uint32_t remainder = value & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  return result + ((remainder > halfway || (remainder == halfway && (result & 1))) ? 1 : 0);
}

}  // namespace

uint16_t FloatToHalfBits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits & kFloatSignMask) >> 16);
  const uint32_t magnitude = bits & ~kFloatSignMask;
  if (magnitude > kFloatInfBits) {  // NaN: keep the top payload bits, set the quiet bit.
    return sign | 0x7e00 | static_cast<uint16_t>((magnitude >> 13) & 0x3ff);
  }
  if (magnitude >= kHalfOverflowBits) return sign | 0x7c00;  // infinity
  if (magnitude >= kHalfMinNormalBits) {
    return sign | static_cast<uint16_t>(ShiftRightRoundEven(magnitude - kRebiasBits, 13));
  }
  // Subnormal float16 (or zero): the result counts units of 2^-24. A float with
  // biased exponent e and 24-bit significand m is m * 2^(e - 150), i.e.
  // m >> (126 - e) units. Below 2^-25 (e < 102) everything rounds to zero.
  const uint32_t exponent = magnitude >> 23;
  if (exponent < 102) return sign;
  const uint32_t significand = (magnitude & 0x7fffff) | 0x800000;
  // A carry out of the top makes 0x400, the smallest normal: still correct.
  return sign | static_cast<uint16_t>(ShiftRightRoundEven(significand, 126 - exponent));
}

float HalfBitsToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1f;
  const uint32_t mantissa = half & 0x3ff;
  if (exponent == 0x1f) {  // infinity or NaN, payload kept
    return std::bit_cast<float>(sign | kFloatInfBits | (mantissa << 13));
  }
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
  }
  return std::bit_cast<float>(sign | ((exponent << 23) + kRebiasBits) | (mantissa << 13));
}

uint16_t FloatToBFloat16Bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & ~kFloatSignMask) > kFloatInfBits) {  // NaN: truncate, set the quiet bit
    return static_cast<uint16_t>((bits >> 16) | 0x0040);
  }
  // Round to nearest even on the dropped 16 bits; overflow carries into infinity.
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float BFloat16BitsToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

void ConvertFloatToHalf(const float* in, Float16* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i].bits = FloatToHalfBits(in[i]);
}

void ConvertHalfToFloat(const Float16* in, float* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = HalfBitsToFloat(in[i].bits);
}

void ConvertFloatToBFloat16(const float* in, BFloat16* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i].bits = FloatToBFloat16Bits(in[i]);
}

void ConvertBFloat16ToFloat(const BFloat16* in, float* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = BFloat16BitsToFloat(in[i].bits);
}

}  // namespace potluck
