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

}  // namespace potluck

#endif  // POTLUCK_COMMON_DTYPE_H_
