// Tensor fusion: many small tensors all-reduced as one buffer, so a model's
// hundreds of biases and norms pay one collective's latency instead of one
// each. The tensors are packed into a scratch buffer back to back, reduced,
// and unpacked; every rank must pass the same list (same dtypes, counts and
// order).
//
// Thread-safety: as the Communicator; `scratch` belongs to the caller and is
// reused across calls so steady-state fusion does not allocate.
#ifndef POTLUCK_COLLECTIVES_FUSION_H_
#define POTLUCK_COLLECTIVES_FUSION_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "collectives/communicator.h"

namespace potluck {

// All-reduces `tensors` (host buffers of one dtype) with one collective call.
// kInvalidArgument if dtypes differ or a tensor is not on the CPU.
absl::Status FusedAllReduce(Communicator& communicator, absl::Span<const TensorView> tensors,
                            ReduceOp op, absl::Time deadline, std::vector<char>& scratch,
                            double weight = 1.0);

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_FUSION_H_
