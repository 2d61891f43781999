#include "worker/internal/state_agreement.h"

#include <iostream>
#include <vector>

#include "common/status.h"
#include "common/tensor_view.h"

namespace potluck {
namespace worker_internal {

absl::StatusOr<StateAgreement> AgreeOnState(Trainer* trainer, Communicator* control,
                                            Communicator* data, const AgreeOnStateOptions& options,
                                            absl::Time deadline) {
  const int world = control->world_size();
  const int rank = control->rank();
  // Per member: (digest, boundary step).
  std::vector<int64_t> shared(2 * world);
  shared[2 * rank] = static_cast<int64_t>(trainer->OuterDigest());
  shared[2 * rank + 1] = static_cast<int64_t>(options.boundary_step);
  RETURN_IF_ERROR(control->AllGather(TensorView::Of(shared.data(), shared.size()), deadline));
  StateAgreement result;
  for (int r = 1; r < world; ++r) {
    if (shared[2 * r + 1] > shared[2 * result.source + 1]) result.source = r;
    result.agreed = result.agreed && shared[2 * r] == shared[0];
  }
  if (result.agreed) return result;
  result.repaired_divergence = !options.mismatch_expected;
  if (result.repaired_divergence) {
    std::cerr << options.context << ": the members' states differ; re-broadcasting from rank "
              << result.source << "\n";
  }
  RETURN_IF_ERROR(trainer->BroadcastState(data, result.source, deadline));
  return result;
}

}  // namespace worker_internal
}  // namespace potluck
