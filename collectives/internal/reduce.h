// Element-wise kernels the collective algorithms reduce with.
#ifndef POTLUCK_COLLECTIVES_INTERNAL_REDUCE_H_
#define POTLUCK_COLLECTIVES_INTERNAL_REDUCE_H_

#include <cstddef>

#include "common/dtype.h"

namespace potluck::collectives_internal {

// acc[i] += in[i] for `count` elements of `dtype`. 16-bit floats are added in
// float32 and rounded back once.
void ReduceSum(DType dtype, void* acc, const void* in, size_t count);

// data[i] *= factor for a floating-point dtype (factor rounded to the dtype's
// precision first for float32, so every rank computes the same bits).
void Scale(DType dtype, void* data, size_t count, double factor);

bool IsFloatingPoint(DType dtype);

}  // namespace potluck::collectives_internal

#endif  // POTLUCK_COLLECTIVES_INTERNAL_REDUCE_H_
