// sync mode: every step is one optimizer step over the group's global batch.
//  1. read this worker's micro-batches from its leased shard (tentatively: a
//     failed step puts the cursor back);
//  2. one small all-reduce of the sample counts (everyone out of data: the
//     epoch's end), then Trainer::Step (the gradients' all-reduce);
//  3. queue a progress report per shard the step consumed and end the step
//     (StepLoop::EndStep: reports, EndStep, a checkpoint when asked).
#include <cmath>
#include <limits>

#include "common/status.h"
#include "common/tensor_view.h"
#include "worker/internal/step_loop.h"
#include "worker/internal/step_policy.h"

namespace potluck {
namespace worker_internal {

namespace {

class SyncPolicy final : public StepPolicy {
 public:
  explicit SyncPolicy(StepLoop* loop) : loop_(loop) {}

  uint64_t BoundaryStep() const override { return loop_->trainer()->step(); }
  bool Done(uint64_t final_step) const override { return loop_->trainer()->step() >= final_step; }
  // A regroup that only adds joiners: rank 0 holds the live model.
  absl::Status ShareStateWithJoiners() override {
    return loop_->trainer()->BroadcastState(loop_->data(), 0, loop_->Deadline());
  }
  bool JoinersMayDiffer() const override { return false; }
  void OnGroupFormed() override {}

  absl::Status StepOnce() override {
    Session* session = loop_->session();
    Trainer* trainer = loop_->trainer();
    const absl::Time start = session->clock()->Now();
    const uint64_t step = trainer->step() + 1;
    ASSIGN_OR_RETURN(StepData data, loop_->cursor()->ReadStep(loop_->world(), step));
    int64_t samples = 0;
    for (const Batch& b : data.batches) samples += b.samples();

    double total = static_cast<double>(samples);
    RETURN_IF_ERROR(
        loop_->control()->AllReduce(TensorView::Of(&total, 1), ReduceOp::kSum, loop_->Deadline()));
    if (total == 0) return loop_->EndOfEpoch();

    loop_->InjectFaults(step);
    ASSIGN_OR_RETURN(TrainStepResult result,
                     trainer->Step(data.batches, loop_->data(), loop_->rank()));
    loop_->cursor()->Commit(data);  // the step happened: its reads count
    for (const auto& [shard, offset] : data.touched) {
      session->Queue(session->Report(shard, offset, step));
    }
    // The step is applied whatever the coordinator answers (a regroup is
    // handled by the loop), so it is shown either way.
    const absl::Status ended = loop_->EndStep(step);
    double validation_loss = std::numeric_limits<double>::quiet_NaN();
    if (loop_->EvaluatesAfter(step)) {
      ASSIGN_OR_RETURN(validation_loss, loop_->ValidationLoss());
    }
    loop_->ShowStep(start, result, static_cast<int64_t>(total), validation_loss);
    return ended;
  }

 private:
  StepLoop* const loop_;  // not owned; owns this policy
};

}  // namespace

std::unique_ptr<StepPolicy> NewSyncPolicy(StepLoop* loop) {
  return std::make_unique<SyncPolicy>(loop);
}

}  // namespace worker_internal
}  // namespace potluck
