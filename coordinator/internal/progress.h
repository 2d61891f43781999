// The ledger and the steps: leasing shards, counting progress, step
// boundaries and the checkpoint policy. Private to coordinator/.
//
// Like membership.h, every function takes the job locked by the facade and
// the call's context, changes the job and marks what must be persisted.
//
// Exactly-once (DESIGN.md invariant 1) is kept here together with the
// ledger (ledger.h): progress counts only once a checkpoint commits it, a
// report is applied once per request id, and a report of a rolled-back
// generation or for a step its worker already ended is refused.
#ifndef POTLUCK_COORDINATOR_INTERNAL_PROGRESS_H_
#define POTLUCK_COORDINATOR_INTERNAL_PROGRESS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "coordinator/internal/job_state.h"
#include "coordinator/types.h"

namespace potluck::coordinator_internal {

// The calls of coordinator.h of the same names, on the locked job.
absl::StatusOr<ShardLease> AcquireShard(Job& job, absl::string_view worker_id,
                                        const CallContext& ctx);
absl::StatusOr<ProgressResult> ReportProgress(Job& job, const ProgressReport& report,
                                              const CallContext& ctx);
absl::StatusOr<StepResult> EndStep(Job& job, absl::string_view worker_id, uint64_t step,
                                   const CallContext& ctx);
LedgerView LedgerViewOf(const Job& job);

// JobSpec.checkpoint's policy for `step`: every N steps, every T seconds,
// and when the epoch's data is all consumed but not yet committed.
bool ShouldCheckpoint(const Job& job, uint64_t step, absl::Time now);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_PROGRESS_H_
