// A job's life: made from a validated spec and its shards, paused, resumed,
// cancelled, extended. Private to coordinator/.
//
// Like the other parts, these take the job locked by the facade (or build a
// new one) and mark what must be persisted; the facade checks the admin
// token and writes.
#ifndef POTLUCK_COORDINATOR_INTERNAL_JOBS_H_
#define POTLUCK_COORDINATOR_INTERNAL_JOBS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

#include "coordinator/internal/job_state.h"
#include "coordinator/types.h"

namespace potluck::coordinator_internal {

// The train shards of spec.dataset.manifest (a dataset directory or its
// manifest.json): CoordinatorOptions.load_shards' default.
absl::StatusOr<std::vector<ShardSpec>> LoadShardsFromManifest(const v1::JobSpec& spec);

// kInvalidArgument, naming the shard or the numbers, for a dataset a GPT job
// could not train to its end: a shard shorter than one sequence plus one
// token, or fewer sequences than one global batch.
absl::Status CheckTrainable(const v1::JobSpec& spec, const std::vector<ShardSpec>& shards);

// The most ranges a job's ledger splits its files into (each is a record in
// the ledger and in every checkpoint's ledger snapshot).
inline constexpr uint64_t kMaxLedgerRanges = 4096;

// The tokens of one ledger range of a GPT job: k global batches of
// sequences (k * global_batch_size * context_length + 1 tokens, the least k
// that keeps the dataset's `total_tokens` within kMaxLedgerRanges ranges).
// A member of any group size whose share of a step divides the global batch
// finishes a range exactly at a step's end (a file's last range, which holds
// the remainder, excepted), and a group of W members splits
// a dataset of one file W ways. Other jobs: unbounded (whole files).
uint64_t RangeTokens(const v1::JobSpec& spec, uint64_t total_tokens);

// A running job with a fresh ledger over `shards`, leasing ranges of
// RangeTokens of each file (the file's remainder joins its last range);
// kInvalidArgument for no shards, an empty one, or what CheckTrainable
// refuses. `spec` must have passed ValidateJobSpec.
absl::StatusOr<std::unique_ptr<Job>> NewJob(const v1::JobSpec& spec,
                                            const std::vector<ShardSpec>& shards, absl::Time now);

// running <-> paused, and either -> cancelled; kFailedPrecondition for any
// other change (a cancelled or finished job stays so). The same state is OK.
absl::Status SetJobState(Job& job, v1::JobState to);

// Raises max_steps; see Coordinator::ExtendJob.
absl::StatusOr<v1::JobStatus> ExtendJob(Job& job, uint64_t max_steps);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_JOBS_H_
