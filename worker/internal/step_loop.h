// StepLoop: the worker's training loop, from its first generation to the
// job's last step, for any StepPolicy (sync, diloco).
//
// Each pass forms the current generation when needed (rendezvous, connect,
// load or receive the group's state, AgreeOnState, agree on the epoch),
// then lets the policy take one step. A communication error or a new
// generation makes it wait for the coordinator's next generation (at most a
// lease's worth, Session::LeaseWait) and form it; the step is redone there.
// At the job's final step (FinalStep(), the one place it is read) rank 0's
// checkpoint of that step is committed and the worker leaves.
//
// Before every checkpoint upload the members agree on their state too, so
// the parts they upload are of one model (DESIGN.md invariant 3).
//
// Ownership: owns the model, the trainer, the shard cursor and the group's
// communicators; borrows the session, the options, the listener and the
// dataset, which must outlive it. Thread-safety: the training thread, except
// AbortGroup() (any thread).
#ifndef POTLUCK_WORKER_INTERNAL_STEP_LOOP_H_
#define POTLUCK_WORKER_INTERNAL_STEP_LOOP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "collectives/tcp_transport.h"
#include "data/dataset.h"
#include "potluck/v1/job.pb.h"
#include "worker/internal/group.h"
#include "worker/internal/session.h"
#include "worker/internal/shard_cursor.h"
#include "worker/internal/step_policy.h"
#include "worker/model.h"
#include "worker/runtime.h"
#include "worker/trainer.h"

namespace potluck {
namespace worker_internal {

class StepLoop {
 public:
  StepLoop(Session* session, const WorkerOptions* options, TcpListener* listener, v1::JobSpec job,
           const Dataset* dataset);

  // Builds the job's model and trainer.
  absl::Status Init();
  // Trains to the end (see WorkerRuntime::Run).
  absl::Status Run();
  // Whether the worker should Leave the job now that Run returned.
  bool leave() const { return leave_; }
  // Aborts the generation's collectives. Any thread.
  void AbortGroup() { group_.Abort(); }
  void DropGroup() { group_.Drop(); }

  Trainer* trainer() const { return trainer_.get(); }
  Model* model() const { return model_.get(); }
  // Divergences AgreeOnState found and repaired (regroups and checkpoints).
  uint64_t state_repairs() const { return state_repairs_; }

  // ---- for the policies ----
  Session* session() const { return session_; }
  ShardCursor* cursor() { return &cursor_; }
  const v1::JobSpec& job() const { return job_; }
  Communicator* control() { return group_.control(); }
  Communicator* data() { return group_.data(); }
  int rank() const { return rank_; }
  int world() const { return world_; }
  // A collective's deadline, from now.
  absl::Time Deadline() const;
  // The job's final step (optimizer steps; diloco: inner steps).
  uint64_t FinalStep() const { return session_->FinalStep(); }
  // Flushes the reports and ends `step` with the coordinator; agrees on the
  // state and uploads this member's part when the coordinator asks for a
  // checkpoint. kAborted: the coordinator made a new generation. During an
  // outage the reports wait (OK while it is tolerated). Only a step's first
  // EndStep, whose answer every member shares, may compare states (a
  // collective): a repeated one passes agree_before_checkpoint = false.
  absl::Status EndStep(uint64_t step, bool agree_before_checkpoint = true);
  // Nobody has data: the epoch's end (see step_loop.cc).
  absl::Status EndOfEpoch();
  // Fault injection (WorkerOptions.fault_nan_from_step) before `step`.
  void InjectFaults(uint64_t step);
  // Whether this member evaluates after boundary step `step` (rank 0).
  bool EvaluatesAfter(uint64_t step) const;
  absl::StatusOr<double> ValidationLoss();
  // Calls on_step. `group_samples`: what the whole group trained in the
  // step (sync) or the round that just ended (diloco; 0 mid-round).
  void ShowStep(absl::Time start, const TrainStepResult& result, int64_t group_samples,
                double validation_loss);

 private:
  absl::Status FreshModel();
  absl::Status FormGroup();
  // The final step is trained: commit it and wait for the commit. True when
  // the job ends there; false when it was extended meanwhile (the commit did
  // not finish it, and the group trains on to the new final step).
  absl::StatusOr<bool> Finish();
  absl::Status Upload(uint64_t step);
  // The job is paused after this worker's last step: holds its place (the
  // heartbeats keep its lease) until the job runs again, is cancelled or
  // ends, or the group changes.
  absl::Status WaitWhilePaused();

  Session* const session_;              // not owned
  const WorkerOptions* const options_;  // not owned
  const v1::JobSpec job_;
  const Dataset* const dataset_;  // not owned
  WorkerGroup group_;
  ShardCursor cursor_;
  std::unique_ptr<StepPolicy> policy_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Trainer> trainer_;
  std::vector<Batch> validation_;  // built at the first evaluation
  int rank_ = 0;
  int world_ = 1;
  bool leave_ = false;
  bool paused_ = false;  // the coordinator said: wait after this step
  // The (step, generation) whose part the coordinator last accepted: the
  // last step's part is not sent again by Finish or EndOfEpoch.
  std::pair<uint64_t, uint64_t> uploaded_{0, 0};
  std::atomic<uint64_t> state_repairs_{0};
};

}  // namespace worker_internal
}  // namespace potluck

#endif  // POTLUCK_WORKER_INTERNAL_STEP_LOOP_H_
