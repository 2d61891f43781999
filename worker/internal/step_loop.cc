#include "worker/internal/step_loop.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>

#include "absl/strings/str_cat.h"

#include "common/failure.h"
#include "common/status.h"
#include "worker/data_feed.h"
#include "worker/internal/state_agreement.h"
#include "worker/model_io.h"

namespace potluck {
namespace worker_internal {

namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(20);

bool IsCommunicationError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

}  // namespace

StepLoop::StepLoop(Session* session, const WorkerOptions* options, TcpListener* listener,
                   v1::JobSpec job, const Dataset* dataset)
    : session_(session),
      options_(options),
      job_(std::move(job)),
      dataset_(dataset),
      group_(options, listener),
      cursor_(session, dataset, job_),
      policy_(job_.mode() == v1::SYNC_MODE_DILOCO ? NewDilocoPolicy(this) : NewSyncPolicy(this)) {}

absl::Status StepLoop::Init() { return FreshModel(); }

absl::Status StepLoop::FreshModel() {
  trainer_.reset();
  ASSIGN_OR_RETURN(model_, CreateJobModel(job_));
  ASSIGN_OR_RETURN(TrainingConfig config, TrainingConfigFromJob(job_, FinalStep()));
  TrainerOptions trainer_options;
  trainer_options.collective_timeout = options_->collective_timeout;
  trainer_options.clock = session_->clock();
  ASSIGN_OR_RETURN(trainer_, Trainer::Create(model_.get(), config, trainer_options));
  return absl::OkStatus();
}

absl::Time StepLoop::Deadline() const {
  return session_->clock()->Now() + options_->collective_timeout;
}

absl::Status StepLoop::Run() {
  bool need_group = true;
  while (true) {
    if (session_->stopping()) {
      leave_ = true;
      return absl::OkStatus();
    }
    if (session_->must_rejoin()) {
      // Counted dead, this worker lost its lease and its uncommitted
      // reports went with the rollback that removed it: it rejoins with
      // nothing of its own (a joiner gets the group's state).
      cursor_.Drop();
      session_->DropReports();
      RETURN_IF_ERROR(session_->Rejoin());
      need_group = true;
    }
    if (need_group || session_->generation_changed()) {
      absl::Status formed = FormGroup();
      if (!formed.ok()) {
        if (group_.backend_unusable()) return formed;
        if (FailedBecause(formed, Failure::kCheckpointUnusable)) {
          leave_ = true;  // every retry would restore the same checkpoint
          return formed;
        }
        if (session_->stopping()) continue;
        if (!IsCommunicationError(formed) && formed.code() != absl::StatusCode::kNotFound) {
          return formed;
        }
        std::cerr << "worker " << session_->worker_id() << ": forming generation "
                  << session_->generation() << " failed (" << formed << "); retrying\n";
        session_->WaitForNewGeneration();
        continue;
      }
      need_group = false;
    }
    if (paused_) {
      RETURN_IF_ERROR(WaitWhilePaused());
      continue;
    }
    if (policy_->Done(FinalStep())) {
      const absl::StatusOr<bool> finished = Finish();
      if (finished.ok() && !*finished) continue;  // extended: train on
      // The group changed before the last step was committed: regroup (a
      // rollback resumes below the final step) and train on.
      if (finished.status().code() != absl::StatusCode::kAborted) return finished.status();
      need_group = true;
      continue;
    }
    absl::Status stepped = policy_->StepOnce();
    if (stepped.ok()) continue;
    if (FailedBecause(stepped, Failure::kJobCancelled)) {
      session_->StopCancelled();
      continue;
    }
    if (FailedBecause(stepped, Failure::kDatasetChanged)) {
      leave_ = true;  // every retry would read the same bytes
      return stepped;
    }
    if (FailedBecause(stepped, Failure::kOwnStateNotFinite)) {
      leave_ = true;  // the others regroup without this worker at once
      return stepped;
    }
    if (!IsCommunicationError(stepped)) return stepped;
    // A peer vanished or the generation changed: wait for the coordinator's
    // new group, then redo the step there.
    if (stepped.code() != absl::StatusCode::kAborted) {
      std::cerr << "worker " << session_->worker_id() << ": step " << trainer_->step() + 1
                << " failed in generation " << session_->generation() << " (" << stepped << ")\n";
    }
    session_->WaitForNewGeneration();
    need_group = true;
  }
}

absl::Status StepLoop::FormGroup() {
  group_.Drop();
  ASSIGN_OR_RETURN(GroupView view, session_->Rendezvous());
  session_->EnterGeneration(view.generation);
  rank_ = -1;
  for (const GroupMember& m : view.members) {
    if (m.worker_id == session_->worker_id()) rank_ = static_cast<int>(m.rank);
  }
  if (rank_ < 0) return absl::NotFoundError("this worker is not in the group view");
  world_ = static_cast<int>(view.members.size());
  RETURN_IF_ERROR(group_.Connect(view, rank_, Deadline()));

  // The group's state: the committed checkpoint after a rollback, the live
  // one otherwise (it adds only joiners, and members hold the live model).
  if (view.from_checkpoint) {
    // The rolled-back lineage's reads and reports are void: the ledger
    // reverted to the checkpoint, and AcquireShard says where to resume.
    cursor_.Drop();
    session_->DropReports();
    auto reader = session_->client()->OpenCheckpoint(session_->job_id(), view.resume_step);
    if (reader.ok()) {
      const absl::Status restored = trainer_->Restore(reader->get());
      if (restored.code() == absl::StatusCode::kInvalidArgument ||
          restored.code() == absl::StatusCode::kDataLoss) {
        return WithFailure(
            Annotate(restored,
                     absl::StrCat("job ", session_->job_id(), "'s committed checkpoint of step ",
                                  view.resume_step, " cannot be restored into this job's model")),
            Failure::kCheckpointUnusable);
      }
      RETURN_IF_ERROR(restored);
    } else if (reader.status().code() == absl::StatusCode::kNotFound && view.resume_step == 0) {
      RETURN_IF_ERROR(FreshModel());
    } else {
      return Annotate(reader.status(), absl::StrCat("loading step ", view.resume_step));
    }
  } else {
    RETURN_IF_ERROR(policy_->ShareStateWithJoiners());
  }
  cursor_.set_out_of_data(false);  // the slots may have changed: look again
  policy_->OnGroupFormed();
  // Invariant 3: one model after every regroup.
  AgreeOnStateOptions agree;
  agree.boundary_step = policy_->BoundaryStep();
  agree.mismatch_expected = policy_->JoinersMayDiffer() && !view.from_checkpoint;
  agree.context = absl::StrCat("worker ", session_->worker_id(), ": generation ", view.generation);
  ASSIGN_OR_RETURN(StateAgreement agreement,
                   AgreeOnState(trainer_.get(), control(), data(), agree, Deadline()));
  if (agreement.repaired_divergence) ++state_repairs_;
  ASSIGN_OR_RETURN(v1::JobStatus job,
                   session_->Retry([&] { return session_->client()->GetJob(session_->job_id()); }));
  RETURN_IF_ERROR(cursor_.AgreeOnEpoch(control(), job.epoch(), Deadline()));
  if (options_->on_group) {
    WorkerGroupEvent event;
    event.generation = view.generation;
    event.backend = std::string(data()->backend());
    event.rank = rank_;
    event.world_size = world_;
    event.from_checkpoint = view.from_checkpoint;
    event.resume_step = view.resume_step;
    event.heard = session_->heard_at();
    event.formed = session_->clock()->Now();
    options_->on_group(event);
  }
  return absl::OkStatus();
}

absl::Status StepLoop::EndStep(uint64_t step, bool agree_before_checkpoint) {
  ASSIGN_OR_RETURN(std::optional<StepResult> ended, session_->EndStep(step));
  if (!ended.has_value()) return absl::OkStatus();  // an outage: keep training
  if (ended->job_state == v1::JOB_STATE_CANCELLED) {
    session_->StopCancelled();
    return absl::OkStatus();
  }
  paused_ = ended->pause;
  if (ended->should_checkpoint) {
    // Every member got the same answer for this step and uploads a part of
    // one checkpoint: first make sure the parts are of one model. (Not when
    // the group is regrouping: its collectives are being aborted, and the
    // regroup agrees on the state before anyone trains on.)
    if (agree_before_checkpoint && !ended->regroup) {
      AgreeOnStateOptions agree;
      agree.boundary_step = policy_->BoundaryStep();
      agree.context = absl::StrCat("worker ", session_->worker_id(), ": checkpoint of step ", step);
      absl::StatusOr<StateAgreement> agreement =
          AgreeOnState(trainer_.get(), control(), data(), agree, Deadline());
      if (!agreement.ok()) {
        std::cerr << agree.context << " not uploaded: the members could not compare states ("
                  << agreement.status() << ")\n";
        return agreement.status();
      }
      if (agreement->repaired_divergence) ++state_repairs_;
    }
    RETURN_IF_ERROR(Upload(step));
  }
  if (ended->regroup) return absl::AbortedError("the coordinator made a new generation");
  return absl::OkStatus();
}

// Uploads this member's part of the step's state: every member sends a
// 1/world_size slice of it, so none uploads the whole model (members hold
// the same state). The coordinator accepts a part once every member has
// ended the step; they do so right after their own step, so retry.
absl::Status StepLoop::Upload(uint64_t step) {
  const std::pair<uint64_t, uint64_t> this_part{step, session_->generation()};
  if (uploaded_ == this_part) return absl::OkStatus();  // accepted already
  Clock* clock = session_->clock();
  const absl::Time give_up = clock->Now() + options_->collective_timeout;
  const auto part = static_cast<uint32_t>(rank_);
  const auto parts = static_cast<uint32_t>(world_);
  while (true) {
    auto writer = session_->client()->BeginCheckpointPart(session_->job_id(), session_->worker_id(),
                                                          step, part, parts);
    absl::Status status = writer.status();
    if (writer.ok()) {
      status = WriteTrainingCheckpointPart(writer->get(), job_, *trainer_, part, parts);
      if (status.ok()) status = (*writer)->Finish().status();
    }
    if (status.ok() || status.code() == absl::StatusCode::kAlreadyExists) {
      uploaded_ = this_part;
      return absl::OkStatus();
    }
    const bool retry = status.code() == absl::StatusCode::kFailedPrecondition ||
                       status.code() == absl::StatusCode::kAborted;
    if (!retry || clock->Now() >= give_up || session_->generation_changed()) {
      // Not fatal: the next checkpoint will do. Training goes on.
      std::cerr << "worker " << session_->worker_id() << ": checkpoint of step " << step
                << " not committed: " << status << "\n";
      return absl::OkStatus();
    }
    clock->SleepFor(kPoll);
  }
}

// Nobody has data: the epoch's shards are all consumed. The epoch rolls
// over when a checkpoint commits them, so rank 0 commits this step; the
// others wait for that commit, then the group moves to the next epoch
// together (or stops: the job's last epoch is done).
absl::Status StepLoop::EndOfEpoch() {
  const uint64_t step = policy_->BoundaryStep();
  RETURN_IF_ERROR(EndStep(step, /*agree_before_checkpoint=*/false));
  RETURN_IF_ERROR(Upload(step));
  Clock* clock = session_->clock();
  const absl::Time give_up = Deadline();
  while (true) {
    ASSIGN_OR_RETURN(v1::JobStatus job, session_->Retry([&] {
      return session_->client()->GetJob(session_->job_id());
    }));
    if (job.state() == v1::JOB_STATE_FINISHED || job.state() == v1::JOB_STATE_CANCELLED) {
      session_->Stop();
      leave_ = false;
      return absl::OkStatus();
    }
    if (session_->generation_changed()) {
      return absl::AbortedError("the group changed at the epoch's end");
    }
    // Not committed in time (rank 0's upload gave up): agree on what is
    // known; the next step finds no data again and retries the commit.
    if (job.committed_step() >= step || session_->stopping() || clock->Now() >= give_up) {
      return cursor_.AgreeOnEpoch(control(), job.epoch(), Deadline());
    }
    clock->SleepFor(kPoll * 5);
  }
}

// The final step reached: rank 0 commits the last step, the others wait for
// that commit, then everyone leaves.
absl::StatusOr<bool> StepLoop::Finish() {
  const uint64_t step = policy_->BoundaryStep();
  // A member that finished first has left, which makes a new generation:
  // that regroup signal is no reason to stop when the step is committed.
  const absl::Status ended = EndStep(step, /*agree_before_checkpoint=*/false);
  if (!ended.ok() && ended.code() != absl::StatusCode::kAborted) return ended;
  RETURN_IF_ERROR(Upload(step));
  Clock* clock = session_->clock();
  const absl::Time give_up = clock->Now() + options_->collective_timeout;
  while (clock->Now() < give_up && !session_->stopping()) {
    auto job = session_->client()->GetJob(session_->job_id());
    if (job.ok() && job->committed_step() >= step) {
      // The coordinator decided at this commit whether it finished the job
      // (job/job_spec.h FinalStep of the spec as it was then): every member
      // reads the same answer. A job extended before the commit trains on,
      // unless this worker was told its own number of steps.
      const uint64_t max_steps = job->spec().max_steps();
      if (options_->max_steps == 0 && job->state() == v1::JOB_STATE_RUNNING &&
          max_steps > FinalStep()) {
        std::cerr << "worker " << session_->worker_id() << ": job " << session_->job_id()
                  << " was extended to " << max_steps << " steps; training on\n";
        session_->SetFinalStep(max_steps);
        return false;
      }
      break;
    }
    if (session_->generation_changed()) {
      return absl::AbortedError("the group changed before the last step was committed");
    }
    clock->SleepFor(kPoll * 5);
  }
  leave_ = true;
  return true;
}

absl::Status StepLoop::WaitWhilePaused() {
  std::cerr << "worker " << session_->worker_id() << ": job " << session_->job_id()
            << " is paused after step " << policy_->BoundaryStep() << "; waiting to resume\n";
  Clock* clock = session_->clock();
  while (!session_->stopping() && !session_->must_rejoin() && !session_->generation_changed()) {
    ASSIGN_OR_RETURN(v1::JobStatus job, session_->Retry([&] {
      return session_->client()->GetJob(session_->job_id());
    }));
    switch (job.state()) {
      case v1::JOB_STATE_PAUSED:
        clock->SleepFor(kPoll * 25);
        continue;
      case v1::JOB_STATE_CANCELLED:
        session_->StopCancelled();
        break;
      case v1::JOB_STATE_FINISHED:
        session_->Stop();
        break;
      default:
        std::cerr << "worker " << session_->worker_id() << ": job " << session_->job_id()
                  << " resumed; training on from step " << policy_->BoundaryStep() << "\n";
        break;
    }
    paused_ = false;
    return absl::OkStatus();
  }
  // Stopping, counted dead or regrouped: the loop handles that first; a
  // group that forms again waits on (the job is still paused).
  return absl::OkStatus();
}

void StepLoop::InjectFaults(uint64_t step) {
  if (options_->fault_nan_from_step == 0 || step < options_->fault_nan_from_step) return;
  torch::NoGradGuard no_grad;
  model_->trainable().values().narrow(0, 0, 1).fill_(std::nan(""));
}

bool StepLoop::EvaluatesAfter(uint64_t step) const {
  return rank_ == 0 && job_.eval_every_steps() > 0 && step % job_.eval_every_steps() == 0;
}

// The loss on the start of the validation split (the same sequences every
// time, so the numbers compare across steps and runs).
absl::StatusOr<double> StepLoop::ValidationLoss() {
  if (validation_.empty()) {
    ASSIGN_OR_RETURN(auto feed, DataFeed::Open(*dataset_, DataFeed::Split::kValidation,
                                               job_.model().gpt().context_length()));
    const int64_t sequences = std::min<int64_t>(
        job_.eval_sequences() > 0 ? job_.eval_sequences() : 64, feed->sequences_per_epoch());
    for (int64_t left = sequences; left > 0; left -= 16) {
      ASSIGN_OR_RETURN(Batch batch, feed->Next(std::min<int64_t>(16, left)));
      validation_.push_back(std::move(batch));
    }
  }
  return trainer_->Evaluate(validation_);
}

void StepLoop::ShowStep(absl::Time start, const TrainStepResult& result, int64_t group_samples,
                        double validation_loss) {
  if (!options_->on_step) return;
  WorkerProgress progress;
  progress.step = trainer_->step();
  progress.max_steps = FinalStep();
  progress.rounds = trainer_->rounds();
  progress.round_ended = job_.mode() == v1::SYNC_MODE_DILOCO && result.exchanged;
  progress.loss = result.loss;
  progress.rank = rank_;
  progress.world_size = world_;
  progress.generation = session_->generation();
  progress.group_samples = group_samples;
  progress.validation_loss = validation_loss;
  const double seconds = absl::ToDoubleSeconds(session_->clock()->Now() - start);
  progress.tokens_per_s =
      seconds > 0 ? result.samples * job_.model().gpt().context_length() / seconds : 0;
  options_->on_step(progress);
}

}  // namespace worker_internal
}  // namespace potluck
