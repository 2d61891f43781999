#include "collectives/internal/mpi_reduce.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace potluck::mpi_internal {
namespace {

// The MPI_User_function behind the fp16/bf16 sums: inout[i] = in[i] + inout[i],
// added in float and rounded once to the 16-bit format. Float's 24-bit
// significand has at least twice the 16-bit formats' bits plus two, so this is
// the correctly rounded 16-bit sum, and it is commutative bit for bit.
template <typename Half, void (*kToFloat)(const Half*, float*, size_t),
          void (*kFromFloat)(const float*, Half*, size_t)>
void SumInFloat(void* in, void* inout, int* length, MPI_Datatype* /*datatype*/) {
  constexpr size_t kChunk = 256;
  float addend[kChunk];
  float sum[kChunk];
  const Half* x = static_cast<const Half*>(in);
  Half* y = static_cast<Half*>(inout);
  const size_t count = static_cast<size_t>(*length);
  for (size_t begin = 0; begin < count; begin += kChunk) {
    const size_t n = std::min(kChunk, count - begin);
    kToFloat(x + begin, addend, n);
    kToFloat(y + begin, sum, n);
    for (size_t i = 0; i < n; ++i) sum[i] += addend[i];
    kFromFloat(sum, y + begin, n);
  }
}

double ToDouble(float value) { return value; }
double ToDouble(double value) { return value; }
double ToDouble(Float16 value) { return ToFloat(value); }
double ToDouble(BFloat16 value) { return ToFloat(value); }

// Rounds `value` to T, through float for the 16-bit formats. When `value` is
// the double nearest a quotient of two numbers exact in T, that is the
// correctly rounded quotient: double and float each have at least twice T's
// significand bits plus two, so the intermediate roundings change nothing.
template <typename T>
T FromDouble(double value);
template <>
float FromDouble<float>(double value) {
  return static_cast<float>(value);
}
template <>
double FromDouble<double>(double value) {
  return value;
}
template <>
Float16 FromDouble<Float16>(double value) {
  return ToFloat16(static_cast<float>(value));
}
template <>
BFloat16 FromDouble<BFloat16>(double value) {
  return ToBFloat16(static_cast<float>(value));
}

// Calls fn.template operator()<T>() with T the storage type of the
// floating-point `dtype`.
template <typename Fn>
void VisitFloatingPoint(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      fn.template operator()<float>();
      return;
    case DType::kFloat64:
      fn.template operator()<double>();
      return;
    case DType::kFloat16:
      fn.template operator()<Float16>();
      return;
    case DType::kBFloat16:
      fn.template operator()<BFloat16>();
      return;
    default:
      POTLUCK_CHECK(false) << DTypeName(dtype) << " is not a floating-point dtype";
  }
}

}  // namespace

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

MPI_Datatype MpiTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return MPI_FLOAT;
    case DType::kFloat64:
      return MPI_DOUBLE;
    case DType::kFloat16:
    case DType::kBFloat16:
      return MPI_UINT16_T;
    case DType::kInt32:
      return MPI_INT32_T;
    case DType::kInt64:
      return MPI_INT64_T;
    case DType::kUInt8:
      return MPI_UINT8_T;
    case DType::kInt8:
      return MPI_INT8_T;
  }
  POTLUCK_CHECK(false) << "invalid DType " << static_cast<int>(dtype);
  return MPI_DATATYPE_NULL;
}

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAverage:
      return "average";
    case ReduceOp::kWeightedAverage:
      return "weighted average";
  }
  return "invalid op";
}

void SumFloat16InFloat(void* in, void* inout, int* length, MPI_Datatype* datatype) {
  SumInFloat<Float16, ConvertHalfToFloat, ConvertFloatToHalf>(in, inout, length, datatype);
}

void SumBFloat16InFloat(void* in, void* inout, int* length, MPI_Datatype* datatype) {
  SumInFloat<BFloat16, ConvertBFloat16ToFloat, ConvertFloatToBFloat16>(in, inout, length, datatype);
}

void CopyScaled(const void* in, void* out, size_t count, DType dtype, double factor) {
  VisitFloatingPoint(dtype, [&]<typename T>() {
    const T* from = static_cast<const T*>(in);
    T* to = static_cast<T*>(out);
    for (size_t i = 0; i < count; ++i) to[i] = FromDouble<T>(ToDouble(from[i]) * factor);
  });
}

void CopyDivided(const void* in, void* out, size_t count, DType dtype, double divisor) {
  VisitFloatingPoint(dtype, [&]<typename T>() {
    const T* from = static_cast<const T*>(in);
    T* to = static_cast<T*>(out);
    for (size_t i = 0; i < count; ++i) to[i] = FromDouble<T>(ToDouble(from[i]) / divisor);
  });
}

void CopyBytes(void* to, const void* from, size_t bytes) {
  if (bytes > 0) std::memcpy(to, from, bytes);
}

}  // namespace potluck::mpi_internal
