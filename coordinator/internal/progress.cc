#include "coordinator/internal/progress.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

#include "common/status.h"
#include "coordinator/internal/membership.h"
#include "job/job_spec.h"

namespace potluck::coordinator_internal {

namespace {

// kInvalidArgument when `step` is further ahead of the slowest member of
// the generation than a member may run (kMaxUnacknowledgedSteps).
absl::Status CheckStepInReach(const Job& job, uint64_t step) {
  uint64_t slowest = std::numeric_limits<uint64_t>::max();
  for (const std::string& id : job.gen.members()) {
    auto it = job.workers.find(id);
    if (it != job.workers.end() && it->second.member()) {
      slowest = std::min(slowest, it->second.record.last_ended_step());
    }
  }
  if (slowest == std::numeric_limits<uint64_t>::max()) slowest = job.gen.resume_step();
  const uint64_t reach = slowest + kMaxUnacknowledgedSteps + 1;
  if (step > reach) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", step, " is out of reach: the group's slowest member ended step ", slowest,
        ", and no member runs more than ", kMaxUnacknowledgedSteps, " steps ahead of it"));
  }
  return absl::OkStatus();
}

// The tokens `worker` consumed in the report's step with `report` applied;
// kInvalidArgument when that is more than one step's worth for its share of
// the group.
absl::StatusOr<uint64_t> TokensInStepWith(const Job& job, const Worker& worker,
                                          const ProgressReport& report) {
  const auto& shards = job.ledger.shards();
  if (report.shard >= shards.size()) return 0;  // the ledger refuses it by name
  const uint64_t consumed = shards[report.shard].consumed;
  const uint64_t advance = report.offset > consumed ? report.offset - consumed : 0;
  const uint64_t before = worker.progress_step == report.step ? worker.progress_tokens : 0;
  // A member of an older generation may have read for a smaller group.
  const int world = report.generation == job.gen.number() ? job.gen.members_size() : 1;
  const uint64_t budget = MaxTokensPerStep(job.record.spec(), world);
  if (before + advance > budget) {
    return absl::InvalidArgumentError(absl::StrCat(
        "progress of ", before + advance, " tokens in step ", report.step, " by worker ",
        report.worker_id, " is more than one step's worth for its share (", budget,
        " tokens in a group of ", world, ")"));
  }
  return before + advance;
}

}  // namespace

absl::StatusOr<ShardLease> AcquireShard(Job& job, absl::string_view worker_id,
                                        const CallContext& ctx) {
  ASSIGN_OR_RETURN(Worker * worker, Member(job, worker_id, ctx));
  // A paused job's members still finish the steps up to its pause step.
  if (job.record.state() != v1::JOB_STATE_PAUSED) RETURN_IF_ERROR(RequireRunning(job));
  const int rank = RankOf(job, worker_id);
  if (rank < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " is not in generation ", job.gen.number()));
  }
  ASSIGN_OR_RETURN(uint32_t index,
                   job.ledger.Acquire(worker->record.worker_id(), rank, job.gen.members_size()));
  const Shard& shard = job.ledger.shards()[index];
  return ShardLease{index,          shard.name, shard.size, shard.consumed, job.ledger.epoch(),
                    shard.checksum, shard.begin};
}

absl::StatusOr<ProgressResult> ReportProgress(Job& job, const ProgressReport& report,
                                              const CallContext& ctx) {
  ASSIGN_OR_RETURN(Worker * worker, Member(job, report.worker_id, ctx));
  if (job.record.state() == v1::JOB_STATE_CANCELLED) return RequireRunning(job);
  if (report.request_id.empty() || report.request_id.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id: must be 1-", kMaxIdBytes, " characters"));
  }
  if (report.generation < job.record.rollback_generation()) {
    return absl::AbortedError(absl::StrCat(
        "generation ", report.generation, " was rolled back by generation ",
        job.record.rollback_generation(), ": resume from step ", job.gen.resume_step()));
  }
  if (report.generation > job.gen.number()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generation ", report.generation, " does not exist yet (current: ", job.gen.number(), ")"));
  }
  if (auto it = worker->recent.find(report.request_id); it != worker->recent.end()) {
    const RecentReport& recent = it->second;
    if (recent.shard != report.shard || recent.offset != report.offset ||
        recent.step != report.step) {
      return absl::InvalidArgumentError(
          absl::StrCat("request_id ", report.request_id, " was used for another report (shard ",
                       recent.shard, ", offset ", recent.offset, ", step ", recent.step, ")"));
    }
    ProgressResult result;
    result.duplicate = true;
    if (report.shard < job.ledger.shards().size()) {
      result.consumed_offset = job.ledger.shards()[report.shard].consumed;
    }
    return result;
  }
  if (report.step <= worker->record.last_ended_step()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", report.worker_id, " already ended step ", worker->record.last_ended_step(),
        "; progress for step ", report.step, " comes too late"));
  }
  RETURN_IF_ERROR(CheckStepInReach(job, report.step));
  ASSIGN_OR_RETURN(const uint64_t tokens_in_step, TokensInStepWith(job, *worker, report));
  RETURN_IF_ERROR(job.ledger.Report(report.shard, report.worker_id, report.offset, report.step));
  worker->progress_step = report.step;
  worker->progress_tokens = tokens_in_step;
  worker->recent[report.request_id] = {report.shard, report.offset, report.step};
  worker->recent_order.push_back(report.request_id);
  if (worker->recent_order.size() > kMaxRecentRequests) {
    worker->recent.erase(worker->recent_order.front());
    worker->recent_order.pop_front();
  }
  const Shard& shard = job.ledger.shards()[report.shard];
  ProgressResult result;
  result.consumed_offset = shard.consumed;
  result.shard_finished = shard.consumed == shard.size;
  return result;
}

absl::StatusOr<StepResult> EndStep(Job& job, absl::string_view worker_id, uint64_t step,
                                   const CallContext& ctx) {
  ASSIGN_OR_RETURN(Worker * worker, Member(job, worker_id, ctx));
  // A worker still in a rolled-back generation ended a step of a lineage
  // that no longer counts: it learns to regroup, and nothing is recorded.
  const bool rolled_back = worker->record.active_generation() < job.record.rollback_generation();
  if (!rolled_back && step > worker->record.last_ended_step()) {
    RETURN_IF_ERROR(CheckStepInReach(job, step));
    worker->record.set_last_ended_step(step);
    job.TouchWorker(*worker);
    if (job.gen.formed() && HasJoiners(job)) {
      // Members of a formed generation are at most a step apart, so the
      // boundary is the step after the first report: everyone reaches it.
      if (job.record.regroup_at_step() == 0) {
        job.record.set_regroup_at_step(step + 1);
        job.dirty = true;
      } else if (step >= job.record.regroup_at_step()) {
        RETURN_IF_ERROR(Regroup(job, /*rollback=*/false, step, ctx));
      }
    }
  }
  StepResult result;
  result.generation = job.gen.number();
  result.regroup = worker->record.active_generation() != job.gen.number();
  auto answer = job.step_answers.find(step);
  if (answer == job.step_answers.end()) {
    Job::StepAnswer first;
    first.pause = job.record.state() == v1::JOB_STATE_PAUSED && job.record.pause_at_step() > 0 &&
                  step >= job.record.pause_at_step();
    // The group's state at a pause is saved, so a long pause loses nothing.
    first.checkpoint = ShouldCheckpoint(job, step, ctx.now) || first.pause;
    answer = job.step_answers.emplace(step, first).first;
    while (job.step_answers.size() > 8) job.step_answers.erase(job.step_answers.begin());
  }
  result.should_checkpoint = answer->second.checkpoint && step > job.record.committed_step();
  result.pause = answer->second.pause && job.record.state() == v1::JOB_STATE_PAUSED;
  result.job_state = job.record.state();
  return result;
}

LedgerView LedgerViewOf(const Job& job) {
  LedgerView view;
  view.epoch = job.ledger.epoch();
  view.committed_step = job.record.committed_step();
  const auto& shards = job.ledger.shards();
  for (uint32_t i = 0; i < shards.size(); ++i) {
    const Shard& shard = shards[i];
    ShardView out;
    out.id = i;
    out.name = shard.name;
    out.begin = shard.begin;
    out.size = shard.size;
    out.committed_offset = shard.committed;
    out.consumed_offset = shard.consumed;
    out.holder = shard.holder;
    out.lease_from_offset = shard.lease_from;
    if (shard.committed == shard.size) {
      out.state = ShardView::State::kDone;
    } else if (!shard.holder.empty()) {
      out.state = ShardView::State::kLeased;
      out.lease_until = job.workers.at(shard.holder).lease_expiry;
    } else if (shard.consumed == shard.size) {
      out.state = ShardView::State::kConsumed;
    }
    view.shards.push_back(std::move(out));
  }
  return view;
}

bool ShouldCheckpoint(const Job& job, uint64_t step, absl::Time now) {
  if (step <= job.record.committed_step()) return false;
  const v1::CheckpointPolicy& policy = job.record.spec().checkpoint();
  if (policy.every_steps() > 0 && step % policy.every_steps() == 0) return true;
  const absl::Time last = absl::FromUnixMillis(job.record.last_checkpoint_unix_ms());
  if (policy.every_seconds() > 0 && now - last >= absl::Seconds(policy.every_seconds())) {
    return true;
  }
  // The epoch cannot roll over before its last shards are committed.
  return job.ledger.AllConsumed() && job.ledger.HasUncommitted();
}

}  // namespace potluck::coordinator_internal
