// Element types of the flat buffers that potluck moves and stores, and the
// 16-bit float formats used on the wire and on disk.
//
// Float16 is IEEE 754 binary16; BFloat16 is the top half of a binary32.
// Conversions from float round to nearest, ties to even; values too large
// become infinity, NaN stays NaN (made quiet), subnormals are exact.
//
// Thread-safety: everything here is stateless and safe from any thread.
#ifndef POTLUCK_COMMON_DTYPE_H_
#define POTLUCK_COMMON_DTYPE_H_

#include <bit>
#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace potluck {

// The numeric values are stored in checkpoints and sent on the wire: never
// renumber, only append.
enum class DType : uint8_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat64 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kUInt8 = 6,
  kInt8 = 7,
};

inline constexpr DType kAllDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16,
                                       DType::kFloat64, DType::kInt32,   DType::kInt64,
                                       DType::kUInt8,   DType::kInt8};

// Bytes per element.
size_t DTypeSize(DType dtype);
// "float32", "float16", "bfloat16", "float64", "int32", "int64", "uint8", "int8".
absl::string_view DTypeName(DType dtype);
// Inverse of DTypeName; also accepts the safetensors spellings ("F32", "BF16", ...).
absl::StatusOr<DType> ParseDType(absl::string_view name);
// Whether a byte read from a file or the network names a DType.
bool IsValidDType(uint8_t value);

// 16-bit float storage types: plain bit patterns, converted explicitly.
struct Float16 {
  uint16_t bits = 0;
};
struct BFloat16 {
  uint16_t bits = 0;
};

// Defined inline below: the codecs and reductions call them per element.
uint16_t FloatToHalfBits(float value);
float HalfBitsToFloat(uint16_t bits);
uint16_t FloatToBFloat16Bits(float value);
float BFloat16BitsToFloat(uint16_t bits);

inline Float16 ToFloat16(float value) { return Float16{FloatToHalfBits(value)}; }
inline float ToFloat(Float16 value) { return HalfBitsToFloat(value.bits); }
inline BFloat16 ToBFloat16(float value) { return BFloat16{FloatToBFloat16Bits(value)}; }
inline float ToFloat(BFloat16 value) { return BFloat16BitsToFloat(value.bits); }

// Bulk conversions of `count` elements.
void ConvertFloatToHalf(const float* in, Float16* out, size_t count);
void ConvertHalfToFloat(const Float16* in, float* out, size_t count);
void ConvertFloatToBFloat16(const float* in, BFloat16* out, size_t count);
void ConvertBFloat16ToFloat(const BFloat16* in, float* out, size_t count);

// DTypeOf<T>() is the DType whose elements are stored as T.
template <typename T>
constexpr DType DTypeOf();
template <>
constexpr DType DTypeOf<float>() {
  return DType::kFloat32;
}
template <>
constexpr DType DTypeOf<Float16>() {
  return DType::kFloat16;
}
template <>
constexpr DType DTypeOf<BFloat16>() {
  return DType::kBFloat16;
}
template <>
constexpr DType DTypeOf<double>() {
  return DType::kFloat64;
}
template <>
constexpr DType DTypeOf<int32_t>() {
  return DType::kInt32;
}
template <>
constexpr DType DTypeOf<int64_t>() {
  return DType::kInt64;
}
template <>
constexpr DType DTypeOf<uint8_t>() {
  return DType::kUInt8;
}
template <>
constexpr DType DTypeOf<int8_t>() {
  return DType::kInt8;
}

namespace dtype_internal {

inline constexpr uint32_t kFloatSignMask = 0x80000000u;
inline constexpr uint32_t kFloatInfBits = 0x7f800000u;
// 65520 = the midpoint between float16's largest finite value (65504) and
// 65536; ties go to the even pattern, which is infinity.
inline constexpr uint32_t kHalfOverflowBits = 0x477ff000u;
// 2^-14, float16's smallest normal value.
inline constexpr uint32_t kHalfMinNormalBits = 0x38800000u;
// (127 - 15) << 23: moves a float exponent to the float16 bias.
inline constexpr uint32_t kRebiasBits = 0x38000000u;

// Shifts `value` right by `shift` bits, rounding to nearest, ties to even.
inline uint32_t ShiftRightRoundEven(uint32_t value, uint32_t shift) {
  const uint32_t result = value >> shift;
  const uint32_t remainder = value & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  return result + ((remainder > halfway || (remainder == halfway && (result & 1))) ? 1 : 0);
}

}  // namespace dtype_internal

inline uint16_t FloatToHalfBits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits & dtype_internal::kFloatSignMask) >> 16);
  const uint32_t magnitude = bits & ~dtype_internal::kFloatSignMask;
  if (magnitude >
      dtype_internal::kFloatInfBits) {  // NaN: keep the top payload bits, set the quiet bit.
    return sign | 0x7e00 | static_cast<uint16_t>((magnitude >> 13) & 0x3ff);
  }
  if (magnitude >= dtype_internal::kHalfOverflowBits) return sign | 0x7c00;  // infinity
  if (magnitude >= dtype_internal::kHalfMinNormalBits) {
    return sign | static_cast<uint16_t>(dtype_internal::ShiftRightRoundEven(
                      magnitude - dtype_internal::kRebiasBits, 13));
  }
  // Subnormal float16 (or zero): the result counts units of 2^-24. A float with
  // biased exponent e and 24-bit significand m is m * 2^(e - 150), i.e.
  // m >> (126 - e) units. Below 2^-25 (e < 102) everything rounds to zero.
  const uint32_t exponent = magnitude >> 23;
  if (exponent < 102) return sign;
  const uint32_t significand = (magnitude & 0x7fffff) | 0x800000;
  // A carry out of the top makes 0x400, the smallest normal: still correct.
  return sign |
         static_cast<uint16_t>(dtype_internal::ShiftRightRoundEven(significand, 126 - exponent));
}

inline float HalfBitsToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1f;
  const uint32_t mantissa = half & 0x3ff;
  if (exponent == 0x1f) {  // infinity or NaN, payload kept
    return std::bit_cast<float>(sign | dtype_internal::kFloatInfBits | (mantissa << 13));
  }
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
  }
  return std::bit_cast<float>(sign | ((exponent << 23) + dtype_internal::kRebiasBits) |
                              (mantissa << 13));
}

inline uint16_t FloatToBFloat16Bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & ~dtype_internal::kFloatSignMask) >
      dtype_internal::kFloatInfBits) {  // NaN: truncate, set the quiet bit
    return static_cast<uint16_t>((bits >> 16) | 0x0040);
  }
  // Round to nearest even on the dropped 16 bits; overflow carries into infinity.
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline float BFloat16BitsToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

}  // namespace potluck

#endif  // POTLUCK_COMMON_DTYPE_H_
