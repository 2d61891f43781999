// Checkpoint commits: who may commit which step, and what a commit changes.
// Private to coordinator/.
//
// DESIGN.md invariant 2 (atomic, exact resume) is kept by the pair: the
// facade takes a PendingCommit under its lock (CheckCommit with a snapshot
// of the ledger as of the step), stores the model and that snapshot in ONE
// checkpoint-store write batch without its lock, then applies the result
// under its lock again (ApplyCommit). uploads.h streams the bytes.
#ifndef POTLUCK_COORDINATOR_INTERNAL_COMMITS_H_
#define POTLUCK_COORDINATOR_INTERNAL_COMMITS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "coordinator/internal/job_state.h"

namespace potluck::coordinator_internal {

struct PendingCommit {
  cs::LedgerSnapshot snapshot;
  uint64_t rollback_generation = 0;
  uint64_t generation = 0;  // the group's, and the worker's rank and size in it
  uint32_t rank = 0;
  uint32_t world_size = 0;
};

// Checks that `worker_id` may commit `step`: a member, of a job not
// cancelled, with no other commit running (kAborted), a step after the
// committed one (kAlreadyExists) that every member has ended
// (kFailedPrecondition). With `snapshot`, also takes the ledger as of `step`
// and marks the job as committing.
absl::StatusOr<PendingCommit> CheckCommit(Job& job, absl::string_view worker_id, uint64_t step,
                                          bool snapshot, const CallContext& ctx);

// Ends what CheckCommit(snapshot=true) began. With `stored` OK, memory
// follows the committed checkpoint: the ledger, the committed step, the job
// finished at its final step or last epoch; a rollback made meanwhile (from
// the older checkpoint) is made again from this one. Returns `stored`'s
// error otherwise.
absl::Status ApplyCommit(Job& job, const PendingCommit& pending, const absl::Status& stored,
                         const CallContext& ctx);

// Whether committing `snapshot` finishes the job: its last epoch ended, or
// it is of the job's final step.
bool CompletedBy(const Job& job, const cs::LedgerSnapshot& snapshot);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_COMMITS_H_
