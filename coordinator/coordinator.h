// Coordinator: the plain core (no gRPC) that owns, per job, the workers, the
// generations, the shard ledger and the checkpoint commits, durable in RocksDB.
// docs/coordinator.md has the state model, the key layout and the protocols.
//
// The contract:
// - Workers Join (with a job token unless the job is open) and keep a lease by
//   calling in (every worker call renews it; Heartbeat exists for that alone).
//   A lapsed lease, a missed rendezvous or a peer's ReportFailure makes the
//   worker dead; it may Join again under the same id.
// - Membership changes make numbered generations. A removal makes a *rollback*
//   generation at once: every uncommitted ledger report is reverted and the
//   group resumes from the last committed checkpoint (resume_step, from
//   checkpoint). Joiners wait in the join window and are admitted at a step
//   boundary (EndStep) or into a generation whose rendezvous is still open; a
//   join-only generation continues from the live step (rank 0 shares state).
// - Rendezvous is a poll: it returns kWaiting until every member has called
//   it; at the deadline the members that did not show are dropped.
// - Exactly-once: progress counts only once a checkpoint commits it; the
//   ledger's committed offsets are what counts. A checkpoint at step s needs
//   every member to have ended step s, and commits the model and the ledger as
//   of s in one RocksDB write batch (CheckpointStore records).
// - Every acknowledged state change is in the state database before the call
//   returns (an *Async call: before its `done` runs); concurrent calls share
//   one synced write (group commit, on a committer thread). Reopening reloads it, takes the
//   committed ledger from the checkpoint store, reverts the rest, restarts leases from now (grace)
//   and starts a rollback generation.
//
// Time: leases and deadlines are read from options.clock only; expiries are
// evaluated at the start of every call and by Tick().
// Thread-safety: a Coordinator is thread-safe; no call blocks waiting for
// another worker. Checkpoint bytes are written without holding its lock.
#ifndef POTLUCK_COORDINATOR_COORDINATOR_H_
#define POTLUCK_COORDINATOR_COORDINATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"
#include "common/clock.h"
#include "coordinator/types.h"
#include "potluck/v1/coordinator.pb.h"
#include "potluck/v1/job.pb.h"

namespace potluck {

struct CoordinatorOptions {
  // <data_dir>/state is the state database, <data_dir>/checkpoints the
  // CheckpointStore.
  std::string data_dir;
  Clock* clock = Clock::Real();  // not owned; must outlive the Coordinator
  absl::Duration lease = absl::Seconds(10);
  absl::Duration rendezvous_timeout = absl::Seconds(30);
  absl::Duration restart_grace = absl::Seconds(30);  // leases after a reopen
  bool sync_writes = true;  // fsync every state write (acknowledged = durable)
  // The most bytes one checkpoint upload may send (a split upload: all its
  // parts together). More is kResourceExhausted and commits nothing, so a
  // member cannot fill the coordinator's disk by declaring huge shapes.
  uint64_t max_checkpoint_bytes = uint64_t{256} << 30;
  // The most bytes every upload being spooled (streaming in, or a part
  // waiting for the rest of its set) may hold together on disk (0: no fixed
  // limit); either way the data directory's filesystem keeps a reserve free
  // for commits. Past it, uploads are kResourceExhausted until others end.
  uint64_t max_spool_bytes = 0;
  // The job's shards; the default reads spec.dataset.manifest (a dataset
  // directory or its manifest.json) and takes its train shards.
  std::function<absl::StatusOr<std::vector<ShardSpec>>(const v1::JobSpec&)> load_shards;
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Open(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Jobs. Submitting the same spec again returns the job (a retry); another
  // spec under a taken id is kAlreadyExists. Admin token required.
  absl::StatusOr<v1::JobStatus> SubmitJob(absl::string_view admin_token, const v1::JobSpec& spec);
  absl::StatusOr<v1::JobStatus> GetJob(absl::string_view job_id);
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs();
  absl::Status PauseJob(absl::string_view admin_token, absl::string_view job_id);
  absl::Status ResumeJob(absl::string_view admin_token, absl::string_view job_id);
  absl::Status CancelJob(absl::string_view admin_token, absl::string_view job_id);
  // A job is finished when the checkpoint of its last step (FinalStep) or
  // of its last epoch's end commits. ExtendJob raises max_steps (and makes a
  // job finished by its steps run again): kInvalidArgument unless it grows
  // (a job without max_steps has nothing to extend),
  // kFailedPrecondition for a cancelled job or one that trained all its
  // epochs. Admin token required.
  absl::StatusOr<v1::JobStatus> ExtendJob(absl::string_view admin_token, absl::string_view job_id,
                                          uint64_t max_steps);
  // Removes `worker_id` from the job now (it is counted dead; a member's
  // group rolls back to the last checkpoint without it). Its credential and
  // its id stop working (kPermissionDenied); with `revoke_token`, so does
  // the join token it joined with. kNotFound for an unknown worker. Admin
  // token required.
  absl::StatusOr<v1::JobStatus> EvictWorker(absl::string_view admin_token, absl::string_view job_id,
                                            absl::string_view worker_id, bool revoke_token);

  // Tokens (callers of these are trusted: the CLI on the data dir, or the
  // service after VerifyAdminToken). Verification errors are
  // kUnauthenticated (malformed, wrong signature, revoked, expired, unknown)
  // or kPermissionDenied (a token of another job).
  absl::StatusOr<std::string> CreateToken(absl::string_view job_id, absl::Duration ttl);
  absl::StatusOr<std::string> CreateAdminToken(absl::Duration ttl);
  absl::Status RevokeToken(absl::string_view token_or_id);
  absl::Status VerifyToken(absl::string_view job_id, absl::string_view token);
  absl::Status VerifyAdminToken(absl::string_view token);

  // Membership. Worker calls on a dead worker are kFailedPrecondition (join
  // again), on an unknown one kNotFound. Join's answer carries a fresh member
  // secret (every Join rotates it; only its hash is stored).
  absl::StatusOr<WorkerStatus> Join(const JoinRequest& request);
  // Whether `secret` is the member credential of `worker_id` in `job_id`:
  // kUnauthenticated when it is missing or wrong, the worker unknown or its
  // join token revoked; kFailedPrecondition when its record predates member
  // credentials (join again). The member calls below trust their caller:
  // the gRPC service authenticates every call first (docs/security.md).
  absl::Status AuthenticateMember(absl::string_view job_id, absl::string_view worker_id,
                                  absl::string_view secret);
  absl::StatusOr<WorkerStatus> Heartbeat(absl::string_view job_id, absl::string_view worker_id);
  absl::Status Leave(absl::string_view job_id, absl::string_view worker_id,
                     const LeaveReason& reason = {});
  // `reporter` (a member) saw `failed` fail. Evidence, not a verdict: the
  // accused is evicted (a rollback generation) once at least two and more
  // than half of its peers in the generation reported it; otherwise its own
  // lease decides. Returns the current generation; reporting a non-member
  // changes nothing.
  absl::StatusOr<uint64_t> ReportFailure(absl::string_view job_id, absl::string_view reporter,
                                         absl::string_view failed);
  absl::StatusOr<RendezvousResult> Rendezvous(absl::string_view job_id, absl::string_view worker_id,
                                              uint64_t generation);
  absl::StatusOr<std::vector<WorkerView>> ListWorkers(absl::string_view job_id);

  // Data and steps (members of the current generation only).
  // AcquireShard: kResourceExhausted when the worker's slot has no pending
  // shard now (kUnavailable stays the caller's "unreachable").
  absl::StatusOr<ShardLease> AcquireShard(absl::string_view job_id, absl::string_view worker_id);
  absl::StatusOr<ProgressResult> ReportProgress(const ProgressReport& report);
  // The worker has reported all its progress through `step`: a step boundary.
  absl::StatusOr<StepResult> EndStep(absl::string_view job_id, absl::string_view worker_id,
                                     uint64_t step);
  // JobSpec.checkpoint's policy: every N steps, every T seconds, and when the
  // epoch's data is all consumed.
  absl::StatusOr<bool> ShouldCheckpoint(absl::string_view job_id, uint64_t step);
  absl::StatusOr<LedgerView> GetLedger(absl::string_view job_id);

  // Commits the model state of `step` with the ledger as of `step`. kAborted
  // while another commit of the job runs, kAlreadyExists for a step not after
  // the committed one, kFailedPrecondition while a member has not ended it.
  absl::Status CommitCheckpoint(absl::string_view job_id, absl::string_view worker_id,
                                uint64_t step, absl::Span<const TensorToSave> tensors,
                                absl::Span<const BlobToSave> blobs = {});
  // The streaming form; the checks run again at Commit().
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginCheckpoint(absl::string_view job_id,
                                                                    absl::string_view worker_id,
                                                                    uint64_t step);
  // One member's part of a checkpoint the whole group uploads, so that no
  // worker sends the whole model: the member of rank r in a group of W sends
  // part r of W (CheckpointPartWriter), a slice of every entry. Each part is
  // spooled to disk under <data_dir>/uploads; the part that completes the
  // set joins them into one checkpoint, committed with the ledger as of
  // `step` exactly as BeginCheckpoint's would be. A part sent again replaces
  // the earlier one; parts of another step or generation are dropped.
  // kInvalidArgument if `parts` is not the group's size or `part` not the
  // worker's rank (also at Finish, if the group changed meanwhile), or if
  // the parts do not tile every entry; otherwise BeginCheckpoint's checks.
  absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginCheckpointPart(
      absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
      uint32_t parts);
  // Heartbeat, AcquireShard and ReportProgress for servers that must not
  // park a thread per call: they return at once, and `done` gets the answer
  // once it is durable, inline or on the coordinator's committer thread (so
  // `done` must be quick and must not call back into the Coordinator).
  void HeartbeatAsync(absl::string_view job_id, absl::string_view worker_id,
                      std::function<void(absl::StatusOr<WorkerStatus>)> done);
  void AcquireShardAsync(absl::string_view job_id, absl::string_view worker_id,
                         std::function<void(absl::StatusOr<ShardLease>)> done);
  void ReportProgressAsync(const ProgressReport& report,
                           std::function<void(absl::StatusOr<ProgressResult>)> done);

  // For reading checkpoints back; owned by the Coordinator.
  CheckpointStore* checkpoints();

  // Evaluates lease and rendezvous expiries of every job now.
  absl::Status Tick();

 private:
  class Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_COORDINATOR_H_
