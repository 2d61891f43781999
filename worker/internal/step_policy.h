// StepPolicy: what one step of the training loop does, per sync mode.
//
// The StepLoop (step_loop.h) owns everything a mode shares: forming each
// generation, state agreement, the end of an epoch and of the job, reports
// and checkpoints. A policy decides what a step is and which step the
// coordinator counts:
//  - sync (sync_policy.cc): every step reads the group's global batch, all-
//    reduces the sample counts (all zero: the epoch's end) and the
//    gradients, and ends the step with the coordinator;
//  - diloco (diloco_policy.cc): inner steps run without any collective, the
//    step that ends a round runs the exchange, and the round is the
//    coordinator's step.
// A new mode (overlapped DiLoCo, say) is a new policy; the loop stays as is.
//
// Thread-safety: the training thread only.
#ifndef POTLUCK_WORKER_INTERNAL_STEP_POLICY_H_
#define POTLUCK_WORKER_INTERNAL_STEP_POLICY_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"

namespace potluck {
namespace worker_internal {

class StepLoop;

class StepPolicy {
 public:
  virtual ~StepPolicy() = default;

  // The step the coordinator counts: steps in sync mode, rounds in diloco
  // mode (a round's inner steps are each worker's own business).
  virtual uint64_t BoundaryStep() const = 0;
  // Whether the group has trained through `final_step` (the job's last step
  // in optimizer steps; StepLoop::FinalStep()).
  virtual bool Done(uint64_t final_step) const = 0;

  // After a regroup that kept the live model (no rollback): hands the
  // group's state to joiners before the members compare states.
  virtual absl::Status ShareStateWithJoiners() = 0;
  // Whether members may hold different states after such a regroup as a
  // matter of course (diloco: a joiner has no outer state yet), so that a
  // mismatch found then is repaired without being reported as a divergence.
  virtual bool JoinersMayDiffer() const = 0;
  // A generation formed: per-generation progress starts again.
  virtual void OnGroupFormed() = 0;

  // One step (sync) or inner step (diloco). A communication error makes
  // the loop regroup and call StepOnce again for the same step.
  virtual absl::Status StepOnce() = 0;
};

// `loop` is not owned and must outlive the policy.
std::unique_ptr<StepPolicy> NewSyncPolicy(StepLoop* loop);
std::unique_ptr<StepPolicy> NewDilocoPolicy(StepLoop* loop);

}  // namespace worker_internal
}  // namespace potluck

#endif  // POTLUCK_WORKER_INTERNAL_STEP_POLICY_H_
