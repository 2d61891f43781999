#include "coordinator/internal/commits.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "common/status.h"
#include "coordinator/internal/membership.h"
#include "job/job_spec.h"

namespace potluck::coordinator_internal {

absl::StatusOr<PendingCommit> CheckCommit(Job& job, absl::string_view worker_id, uint64_t step,
                                          bool snapshot, const CallContext& ctx) {
  RETURN_IF_ERROR(Member(job, worker_id, ctx).status());
  PendingCommit pending;
  pending.generation = job.gen.number();
  pending.world_size = static_cast<uint32_t>(job.gen.members_size());
  const int rank = RankOf(job, worker_id);
  if (rank < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " is not in generation ", job.gen.number()));
  }
  pending.rank = static_cast<uint32_t>(rank);
  if (job.record.state() == v1::JOB_STATE_CANCELLED) return RequireRunning(job);
  if (job.commit_in_progress) {
    return absl::AbortedError(
        absl::StrCat("another checkpoint of job ", job.id(), " is being committed"));
  }
  if (step <= job.record.committed_step()) {
    return absl::AlreadyExistsError(absl::StrCat("step ", step, " is not after job ", job.id(),
                                                 "'s committed step ",
                                                 job.record.committed_step()));
  }
  std::vector<std::string> behind;
  for (const std::string& id : job.gen.members()) {
    if (job.workers.at(id).record.last_ended_step() < step) behind.push_back(id);
  }
  if (!behind.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("members ", absl::StrJoin(behind, ", "),
                                                      " have not ended step ", step, " yet"));
  }
  if (snapshot) {
    pending.snapshot = job.ledger.SnapshotAt(step, job.record.spec().dataset().epochs());
    pending.rollback_generation = job.record.rollback_generation();
    job.commit_in_progress = true;
  }
  return pending;
}

absl::Status ApplyCommit(Job& job, const PendingCommit& pending, const absl::Status& stored,
                         const CallContext& ctx) {
  job.commit_in_progress = false;
  RETURN_IF_ERROR(stored);
  // The checkpoint is committed: memory follows, whatever happened meanwhile.
  job.ledger.ApplyCommitted(pending.snapshot);
  job.record.set_committed_step(pending.snapshot.step());
  job.record.set_last_checkpoint_unix_ms(absl::ToUnixMillis(ctx.now));
  job.record.clear_problem();  // the job goes on: whatever stopped it is solved
  if (CompletedBy(job, pending.snapshot)) job.record.set_state(v1::JOB_STATE_FINISHED);
  job.dirty = true;
  if (job.record.rollback_generation() != pending.rollback_generation) {
    // A rollback generation was made during the commit, from the older
    // checkpoint: make a new one that resumes from this one.
    RETURN_IF_ERROR(Regroup(job, /*rollback=*/true, 0, ctx));
  }
  return absl::OkStatus();
}

bool CompletedBy(const Job& job, const cs::LedgerSnapshot& snapshot) {
  if (job.record.state() == v1::JOB_STATE_CANCELLED) return false;
  const uint64_t final_step = FinalStep(job.record.spec());
  return snapshot.finished() || (final_step > 0 && snapshot.step() >= final_step);
}

}  // namespace potluck::coordinator_internal
