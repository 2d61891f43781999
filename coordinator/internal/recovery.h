// Recovery on open: rebuilds every job from the state database and the
// checkpoint store after a stop or a crash. Private to coordinator/.
//
// DESIGN.md invariant 5 (a restart loses nothing committed) is kept here:
// the checkpoint store's ledger record is the truth about committed
// progress (it committed with the model in one batch; the state database may
// lag it by one commit and holds uncommitted reports), so the ledger is
// reset to it and everything after it is reverted; every live worker gets a
// fresh lease of `restart_grace` from now, and a job that had members
// resumes in a rollback generation from the committed checkpoint.
#ifndef POTLUCK_COORDINATOR_INTERNAL_RECOVERY_H_
#define POTLUCK_COORDINATOR_INTERNAL_RECOVERY_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "checkpoint/checkpoint_store.h"
#include "coordinator/internal/job_state.h"
#include "coordinator/internal/state_db.h"

namespace potluck::coordinator_internal {

using JobMap = std::map<std::string, std::unique_ptr<Job>, std::less<>>;

// The jobs as of the last acknowledged state, reconciled with the
// checkpoints; each is marked dirty so the caller persists the result.
// kDataLoss for a record that does not parse, a job without its record, a
// missing shard, or a ledger record whose checkpoint is not in the store.
absl::StatusOr<JobMap> LoadJobs(StateDb& db, CheckpointStore& checkpoints, absl::Time now,
                                absl::Duration restart_grace, absl::Duration lease,
                                absl::Duration rendezvous_timeout);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_RECOVERY_H_
