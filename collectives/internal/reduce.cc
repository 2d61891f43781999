#include "collectives/internal/reduce.h"

#include <cstdint>
#include <type_traits>

#include "common/check.h"

namespace potluck::collectives_internal {

namespace {

template <typename T>
void Add(void* acc, const void* in, size_t count) {
  T* __restrict a = static_cast<T*>(acc);
  const T* __restrict b = static_cast<const T*>(in);
  for (size_t i = 0; i < count; ++i) a[i] += b[i];
}

template <typename T>
void AddWrapping(void* acc, const void* in, size_t count) {
  // Integer sums wrap like the hardware does instead of being undefined.
  using Unsigned = std::make_unsigned_t<T>;
  T* a = static_cast<T*>(acc);
  const T* b = static_cast<const T*>(in);
  for (size_t i = 0; i < count; ++i) {
    a[i] = static_cast<T>(static_cast<Unsigned>(a[i]) + static_cast<Unsigned>(b[i]));
  }
}

template <float (*ToFloat)(uint16_t), uint16_t (*FromFloat)(float)>
void Add16(void* acc, const void* in, size_t count) {
  uint16_t* a = static_cast<uint16_t*>(acc);
  const uint16_t* b = static_cast<const uint16_t*>(in);
  for (size_t i = 0; i < count; ++i) a[i] = FromFloat(ToFloat(a[i]) + ToFloat(b[i]));
}

template <float (*ToFloat)(uint16_t), uint16_t (*FromFloat)(float)>
void Scale16(void* data, size_t count, float factor) {
  uint16_t* d = static_cast<uint16_t*>(data);
  for (size_t i = 0; i < count; ++i) d[i] = FromFloat(ToFloat(d[i]) * factor);
}

}  // namespace

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

void ReduceSum(DType dtype, void* acc, const void* in, size_t count) {
  switch (dtype) {
    case DType::kFloat32:
      return Add<float>(acc, in, count);
    case DType::kFloat64:
      return Add<double>(acc, in, count);
    case DType::kFloat16:
      return Add16<HalfBitsToFloat, FloatToHalfBits>(acc, in, count);
    case DType::kBFloat16:
      return Add16<BFloat16BitsToFloat, FloatToBFloat16Bits>(acc, in, count);
    case DType::kInt32:
      return AddWrapping<int32_t>(acc, in, count);
    case DType::kInt64:
      return AddWrapping<int64_t>(acc, in, count);
    case DType::kUInt8:
      return AddWrapping<uint8_t>(acc, in, count);
    case DType::kInt8:
      return AddWrapping<int8_t>(acc, in, count);
  }
}

void Scale(DType dtype, void* data, size_t count, double factor) {
  switch (dtype) {
    case DType::kFloat32: {
      float* d = static_cast<float*>(data);
      const float f = static_cast<float>(factor);
      for (size_t i = 0; i < count; ++i) d[i] *= f;
      return;
    }
    case DType::kFloat64: {
      double* d = static_cast<double*>(data);
      for (size_t i = 0; i < count; ++i) d[i] *= factor;
      return;
    }
    case DType::kFloat16:
      return Scale16<HalfBitsToFloat, FloatToHalfBits>(data, count, static_cast<float>(factor));
    case DType::kBFloat16:
      return Scale16<BFloat16BitsToFloat, FloatToBFloat16Bits>(data, count,
                                                               static_cast<float>(factor));
    default:
      POTLUCK_CHECK(false) << "Scale of " << DTypeName(dtype);
  }
}

}  // namespace potluck::collectives_internal
