// How the MPI backend maps potluck's element types and reductions onto MPI:
// the MPI type a dtype travels as, the fp16/bf16 sums MPI lacks, and the
// scaling and division around a sum that make averages. Private to
// potluck_collectives_mpi; the numerics are described in
// collectives/mpi_communicator.h (Reductions).
#ifndef POTLUCK_COLLECTIVES_INTERNAL_MPI_REDUCE_H_
#define POTLUCK_COLLECTIVES_INTERNAL_MPI_REDUCE_H_

// MPI's C API only: OpenMPI's deprecated C++ bindings (mpicxx.h) do not
// compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <cstddef>

#include "absl/strings/string_view.h"

#include "collectives/communicator.h"
#include "common/dtype.h"

namespace potluck::mpi_internal {

bool IsFloatingPoint(DType dtype);

// The MPI type a buffer of `dtype` is sent as; 16-bit floats travel as
// uint16 units (MPI has no 16-bit float type) and are reduced by our own ops.
MPI_Datatype MpiTypeOf(DType dtype);

// "sum", "average", "weighted average".
absl::string_view ReduceOpName(ReduceOp op);

// The MPI_User_functions behind the fp16/bf16 sums, for MPI_Op_create with
// commute=1: inout[i] = in[i] + inout[i], added in float and rounded once to
// the 16-bit format, which is the correctly rounded 16-bit sum and
// commutative bit for bit.
void SumFloat16InFloat(void* in, void* inout, int* length, MPI_Datatype* datatype);
void SumBFloat16InFloat(void* in, void* inout, int* length, MPI_Datatype* datatype);

// out[i] = round(in[i] * factor), computed in double (not always correctly
// rounded for the 16-bit formats: an arbitrary factor can make the rounding
// through float land on a tie). Floating-point dtypes only.
void CopyScaled(const void* in, void* out, size_t count, DType dtype, double factor);

// out[i] = round(in[i] / divisor), computed in double: the correctly rounded
// quotient when `divisor` is exact in the dtype (world sizes up to 256 for
// bf16, 2048 for fp16). Floating-point dtypes only.
void CopyDivided(const void* in, void* out, size_t count, DType dtype, double divisor);

// memcpy that accepts null pointers when `bytes` is 0.
void CopyBytes(void* to, const void* from, size_t bytes);

}  // namespace potluck::mpi_internal

#endif  // POTLUCK_COLLECTIVES_INTERNAL_MPI_REDUCE_H_
