// Membership and generations: who is alive, who is a member, when a new
// generation forms and from which step it resumes. Private to coordinator/.
//
// Every function takes the job locked by the facade (coordinator.cc) and the
// call's context (time, lease, rendezvous timeout); it changes the job and
// marks what must be persisted, or returns why it refused. Nothing here does
// I/O, checks credentials or takes a lock: the facade has done that.
//
// The rules (docs/coordinator.md has the whole state model):
// - Every worker call renews the caller's lease; a lapsed lease, a missed
//   rendezvous or a peer's report makes a worker dead.
// - A member's removal makes a *rollback* generation at once: every
//   uncommitted ledger report is reverted and the group resumes from the
//   committed checkpoint. Joiners wait and are admitted at a step boundary
//   (EndStep) or into a generation whose rendezvous is still open.
#ifndef POTLUCK_COORDINATOR_INTERNAL_MEMBERSHIP_H_
#define POTLUCK_COORDINATOR_INTERNAL_MEMBERSHIP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "coordinator/internal/job_state.h"
#include "coordinator/types.h"

namespace potluck::coordinator_internal {

// kInvalidArgument unless `id` is 1-64 characters of [A-Za-z0-9._-].
absl::Status ValidateWorkerId(absl::string_view id);

// Lapsed leases and missed rendezvous deadlines as of ctx.now: the workers
// become dead, and a lost member rolls the group back.
absl::Status EvaluateExpiries(Job& job, const CallContext& ctx);

// The live worker, its lease renewed; kNotFound for an unknown worker,
// kFailedPrecondition for a dead one (join again).
absl::StatusOr<Worker*> LiveWorker(Job& job, absl::string_view worker_id, const CallContext& ctx);
// LiveWorker that must also be a member: a worker still in the join window
// is kFailedPrecondition with Failure::kWaitingForAdmission.
absl::StatusOr<Worker*> Member(Job& job, absl::string_view worker_id, const CallContext& ctx);
void MarkDead(Job& job, Worker& worker, absl::string_view reason);
// kResourceExhausted when the join token `token_id` already has the most
// live workers in `job` its access.max_workers_per_token allows (a rejoin
// of `worker_id` itself does not count twice).
absl::Status CheckTokenCap(const Job& job, absl::string_view token_id, absl::string_view worker_id);
// The join token id `worker_id` joined with while it is alive (its lease
// runs), else "": Join waives that token's expiry for it.
std::string LiveMemberTokenId(const Job& job, absl::string_view worker_id, const CallContext& ctx);
// The admin's eviction of `worker_id` (Coordinator::EvictWorker): counted
// dead and marked evicted, a member's group rolled back without it. Returns
// the id of the join token it joined with ("" for an open job).
absl::StatusOr<std::string> Evict(Job& job, absl::string_view worker_id, const CallContext& ctx);
// Whether a generation may admit `worker`: it waits in the join window and
// has called since its Join (it is running, not only joined).
bool Admissible(const Worker& worker);
// Whether any worker of `job` is Admissible.
bool HasJoiners(const Job& job);

// Makes the next generation: the live members, then the admissible
// joiners in join order. A rollback (or a first generation) reverts the ledger to its
// committed state and resumes from the committed step; otherwise the group
// goes on from `boundary_step`.
absl::Status Regroup(Job& job, bool rollback, uint64_t boundary_step, const CallContext& ctx);

// The calls of coordinator.h of the same names, on the locked job. Join
// expects the facade to have checked the token and the worker id.
absl::StatusOr<WorkerStatus> Join(Job& job, const std::string& worker_id,
                                  const std::string& endpoint, const CallContext& ctx);
absl::StatusOr<WorkerStatus> Heartbeat(Job& job, absl::string_view worker_id,
                                       const CallContext& ctx);
absl::Status Leave(Job& job, absl::string_view worker_id, const LeaveReason& reason,
                   const CallContext& ctx);
absl::StatusOr<uint64_t> ReportFailure(Job& job, absl::string_view reporter,
                                       absl::string_view failed, const CallContext& ctx);
absl::StatusOr<RendezvousResult> Rendezvous(Job& job, absl::string_view worker_id,
                                            uint64_t generation, const CallContext& ctx);
std::vector<WorkerView> ListWorkers(const Job& job);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_MEMBERSHIP_H_
