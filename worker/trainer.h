// Trainer: turns batches into optimizer steps for one worker of a group,
// driven one call at a time so the worker runtime can regroup between calls.
//
// - sync: every Step runs forward/backward over this worker's micro-batches
//   (gradient accumulation), all-reduces the gradients (one fused buffer,
//   weighted by samples, the loss riding along in a trailing slot), clips
//   them to a global norm and takes an AdamW step with a warmup + cosine
//   learning rate. Every worker ends each step with the same bits.
// - diloco: every Step is one *inner* AdamW step on local data. After H inner
//   steps (or once the round's time limit has passed, so slow workers don't
//   hold fast ones back) the same Step also runs the outer step: the
//   pseudo-gradient (round start - now) is all-reduced, optionally as int8
//   with error feedback, weighted by the samples each worker trained in the
//   round (summed first: a round nobody trained in is empty and changes
//   nothing), and an outer Nesterov-momentum SGD step moves the round's start
//   parameters. Outer parameters are identical everywhere; inner optimizer
//   state is each worker's own.
//
// Randomness (dropout) is drawn from a generator reseeded from (seed, rank,
// step, micro-batch) at every micro-batch, so the state a checkpoint needs is
// counters, never a generator's internals.
//
// A non-finite loss or gradient (this worker's or, through the all-reduce, a
// peer's) stops the step with kDataLoss and leaves parameters and optimizer
// state untouched.
//
// Ownership: the Trainer borrows the Model (which must outlive it) and owns
// the optimizer state. Thread-safety: one thread at a time.
#ifndef POTLUCK_WORKER_TRAINER_H_
#define POTLUCK_WORKER_TRAINER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"
#include "collectives/communicator.h"
#include "common/clock.h"
#include "job/job_spec.h"
#include "potluck/v1/job.pb.h"
#include "worker/model.h"

namespace potluck {

// A JobSpec's training settings with every default filled in (the job
// library's JobSettings), and what the trainer adds to them.
struct TrainingConfig : JobSettings {
  // Length of the learning-rate schedule in (inner) optimizer steps; 0 = no decay.
  uint64_t schedule_steps = 0;
  WireCodec codec = WireCodec::kNone;  // JobSettings::wire_codec, as the codec to use
};

// Reads the optimizer, mode and DiLoCo settings of `job` through the job
// library's ResolveJobSettings (job/job_spec.h: its defaults for zero
// fields, its range rules). kInvalidArgument naming the field.
absl::StatusOr<TrainingConfig> TrainingConfigFromJob(const potluck::v1::JobSpec& job,
                                                     uint64_t schedule_steps);

struct TrainStepResult {
  uint64_t step = 0;         // steps (sync) or inner steps (diloco) taken so far
  uint64_t rounds = 0;       // diloco: outer steps taken so far
  double loss = 0;           // sync: the group's mean loss; diloco: this worker's
  double learning_rate = 0;  // (inner) learning rate used
  double grad_norm = 0;      // before clipping (sync: of the reduced gradient)
  int64_t samples = 0;       // this worker's samples in the step
  bool exchanged = false;    // the step all-reduced (every sync step; diloco round ends)
};

struct TrainerOptions {
  // Deadline of each collective, from its start.
  absl::Duration collective_timeout = absl::Seconds(60);
  // Gradient buckets all-reduced one after the other (0 = one fused buffer).
  size_t bucket_bytes = 0;
  // Time for the DiLoCo inner time limit; nullptr = the real clock. Not owned.
  Clock* clock = nullptr;
};

class Trainer {
 public:
  // kInvalidArgument for a model whose parameters are not float32 (the wire
  // codecs and the checkpoint tensors assume it) when a codec is set.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(Model* model, const TrainingConfig& config,
                                                         const TrainerOptions& options = {});
  ~Trainer();

  // One step over this worker's `micro_batches` (at least one; in sync mode
  // with a group, none is allowed: the worker then adds nothing but still
  // takes part in the all-reduce, so a worker out of data does not stall the
  // others; at least one worker must have data). `comm` is the
  // current generation's communicator, or nullptr to train alone. `rank` seeds
  // this worker's dropout. On any error the model and optimizer are as before
  // the call, except after a failed diloco outer exchange, which leaves the
  // inner progress in place so the round's exchange can be retried.
  absl::StatusOr<TrainStepResult> Step(absl::Span<const Batch> micro_batches, Communicator* comm,
                                       int rank = 0);

  // diloco: ends the current round now, whatever its inner steps: the
  // exchange and the outer step, weighted by the samples this worker trained
  // in the round (a worker out of data takes part with what it has, possibly
  // nothing: weight 0). If no member trained in the round, it is empty and
  // nothing changes (rounds() stays). kFailedPrecondition in sync mode.
  // Errors as Step's outer exchange.
  absl::StatusOr<TrainStepResult> FinishRound(Communicator* comm);

  // The mean loss over `batches`, without gradients or dropout.
  absl::StatusOr<double> Evaluate(absl::Span<const Batch> batches);

  uint64_t step() const;
  uint64_t rounds() const;
  // diloco: inner steps taken in the current round (0 at a round boundary).
  uint32_t inner_steps_in_round() const;
  // diloco: the round's exchange failed and has not been redone yet.
  bool exchange_pending() const;
  // diloco: the round has begun and its time limit has passed (false
  // without a limit).
  bool RoundOutOfTime() const;
  const TrainingConfig& config() const;

  // The complete trainer state: parameters ("param/<name>", views of the
  // model's own buffers, valid until the next Step), optimizer state and
  // counters (one blob, "trainer"). Restore reads it back into this trainer's
  // model, which must have the same parameters; kInvalidArgument naming the
  // entry otherwise, kDataLoss for a corrupt blob.
  std::vector<TensorToSave> StateTensors() const;
  std::string StateBlob() const;
  absl::Status Restore(CheckpointReader* reader);

  // Copies `root`'s complete state (the entries above) to every member of
  // `comm`: how a joiner, or a member whose state digest differs, gets the
  // group's model without a checkpoint.
  absl::Status BroadcastState(Communicator* comm, int root, absl::Time deadline);
  // XXH3 of the state's bytes and counters: equal on every member exactly
  // when their models and optimizers are bitwise equal.
  uint64_t StateDigest() const;
  // What members of a group share at every moment: the whole state in sync
  // mode; in diloco mode the outer state (the round's start parameters,
  // outer momentum, rounds), since inner progress is each worker's own.
  uint64_t OuterDigest() const;

 private:
  class Impl;
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The learning rate at (0-based) step `step`: linear warmup over
// warmup_steps, then cosine decay to learning_rate * min_lr_ratio at
// schedule_steps (constant after it; no decay when schedule_steps is 0).
double LearningRateAt(const TrainingConfig& config, uint64_t step);

}  // namespace potluck

#endif  // POTLUCK_WORKER_TRAINER_H_
