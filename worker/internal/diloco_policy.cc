// diloco mode: every step is one inner step on this worker's data, with no
// collective; the step that ends a round (its H-th inner step, the round's
// time limit, or no data left in this worker's slot) runs the exchange, and
// then the round is a step boundary: the members sum what they trained in
// it and how many ran out of data (all of them: the epoch's end), and end
// the round with the coordinator. Progress reports carry the round they
// belong to; the final step (inner steps) becomes ceil(final / H) rounds.
// Members keep their own inner state across regroups while their outer
// state agrees (Trainer::OuterDigest).
#include <cmath>
#include <limits>
#include <vector>

#include "common/status.h"
#include "common/tensor_view.h"
#include "job/job_spec.h"
#include "worker/internal/step_loop.h"
#include "worker/internal/step_policy.h"

namespace potluck {
namespace worker_internal {

namespace {

class DilocoPolicy final : public StepPolicy {
 public:
  explicit DilocoPolicy(StepLoop* loop) : loop_(loop) {}

  uint64_t BoundaryStep() const override { return loop_->trainer()->rounds(); }
  // The group stops after the round that reaches the final inner step (with
  // a round time limit, rounds may hold fewer).
  bool Done(uint64_t final_step) const override {
    return loop_->trainer()->rounds() >= FinalStepFor(loop_->job(), final_step);
  }
  // Members keep their own progress; AgreeOnState hands the leader's state
  // to a joiner or to a member that missed a round's exchange.
  absl::Status ShareStateWithJoiners() override { return absl::OkStatus(); }
  bool JoinersMayDiffer() const override { return true; }
  void OnGroupFormed() override { round_samples_ = 0; }

  absl::Status StepOnce() override;

 private:
  StepLoop* const loop_;  // not owned; owns this policy
  // The sequences this worker trained in the current round.
  int64_t round_samples_ = 0;
};

absl::Status DilocoPolicy::StepOnce() {
  Session* session = loop_->session();
  Trainer* trainer = loop_->trainer();
  ShardCursor* cursor = loop_->cursor();
  const absl::Time start = session->clock()->Now();
  const uint64_t round = trainer->rounds() + 1;
  StepData data;
  if (!cursor->out_of_data() && !trainer->exchange_pending()) {
    ASSIGN_OR_RETURN(data, cursor->ReadStep(loop_->world(), round));
  }
  TrainStepResult result;
  if (trainer->exchange_pending()) {
    // The round's exchange failed and the group formed again as it was:
    // redo the exchange (every member does), then end the round.
    ASSIGN_OR_RETURN(result, trainer->FinishRound(loop_->data()));
  } else if (data.batches.empty() && data.unreachable && !trainer->RoundOutOfTime()) {
    // No shard, and the coordinator cannot be reached to lease one: wait
    // for it (within the outage tolerance) rather than take this worker's
    // slot for dry, then try again.
    RETURN_IF_ERROR(session->CheckOutage());
    session->clock()->SleepFor(absl::Milliseconds(200));
    return absl::OkStatus();
  } else if (data.batches.empty()) {
    // Nothing left in this worker's slot (or, with the coordinator away,
    // the round's time is up): it ends its round now and takes part in the
    // exchange with what it trained (others may train on). Only a dry slot
    // stays dry until the epoch's end.
    cursor->set_out_of_data(!data.unreachable);
    ASSIGN_OR_RETURN(result, trainer->FinishRound(loop_->data()));
  } else {
    loop_->InjectFaults(trainer->step() + 1);
    const uint64_t before = trainer->step();
    absl::StatusOr<TrainStepResult> stepped =
        trainer->Step(data.batches, loop_->data(), loop_->rank());
    if (trainer->step() > before) {
      // The inner step is applied, even when the round's exchange after it
      // failed (it is redone after the regroup): its reads count.
      cursor->Commit(data);
      for (const Batch& b : data.batches) round_samples_ += b.samples();
      for (const auto& [shard, offset] : data.touched) {
        session->Queue(session->Report(shard, offset, round));
      }
    }
    if (!stepped.ok()) return stepped.status();
    result = *stepped;
  }
  if (!result.exchanged) {
    // Mid-round: the reports go now (the coordinator releases a finished
    // shard only then), the round's EndStep comes at its end.
    const absl::Status flushed = session->FlushReports();
    if (!flushed.ok() && flushed.code() != absl::StatusCode::kUnavailable) return flushed;
    if (!flushed.ok()) RETURN_IF_ERROR(session->CheckOutage());
    loop_->ShowStep(start, result, 0, std::numeric_limits<double>::quiet_NaN());
    return absl::OkStatus();
  }
  // The round's end, for every member.
  std::vector<double> sums = {static_cast<double>(round_samples_),
                              cursor->out_of_data() ? 1.0 : 0.0};
  RETURN_IF_ERROR(loop_->control()->AllReduce(TensorView::Of(sums.data(), sums.size()),
                                              ReduceOp::kSum, loop_->Deadline()));
  round_samples_ = 0;
  // (An empty round, nobody having trained in it, did not count.)
  const uint64_t ended_round = BoundaryStep();
  const bool epoch_done = static_cast<int>(sums[1]) == loop_->world();
  // An empty round ends a round that was ended before: no new checkpoint.
  const absl::Status ended = epoch_done ? loop_->EndOfEpoch()
                                        : loop_->EndStep(ended_round,
                                                         /*agree_before_checkpoint=*/sums[0] > 0);
  if (epoch_done && ended.ok()) cursor->set_out_of_data(false);
  double validation_loss = std::numeric_limits<double>::quiet_NaN();
  if (loop_->EvaluatesAfter(ended_round) && sums[0] > 0) {
    ASSIGN_OR_RETURN(validation_loss, loop_->ValidationLoss());
  }
  if (sums[0] == 0) result.exchanged = false;  // shown as no round's end
  loop_->ShowStep(start, result, static_cast<int64_t>(sums[0]), validation_loss);
  return ended;
}

}  // namespace

std::unique_ptr<StepPolicy> NewDilocoPolicy(StepLoop* loop) {
  return std::make_unique<DilocoPolicy>(loop);
}

}  // namespace worker_internal
}  // namespace potluck
