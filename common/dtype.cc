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
