// CoordinatorClient: what a worker asks of its coordinator, whether the
// coordinator runs in the same process (in_process_client.h, for tests and
// embedding) or across the network (the gRPC client). This header and
// types.h are the potluck::coordinator_client target: a worker depends on
// them, not on the coordinator core and its RocksDB state. The worker runtime is
// written against this interface only, so tests can stub or wrap it (drop
// calls, simulate an outage).
//
// Every call means what the Coordinator method of the same name means
// (coordinator.h); errors keep their canonical codes across the network
// (kUnavailable: the coordinator cannot be reached; retry with backoff).
//
// Thread-safety: implementations are thread-safe (the heartbeat thread and
// the training thread share one client). Checkpoint readers and writers are
// used by one thread at a time and must not outlive the client.
#ifndef POTLUCK_COORDINATOR_CLIENT_H_
#define POTLUCK_COORDINATOR_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "checkpoint/checkpoint_store.h"
#include "coordinator/types.h"
#include "potluck/v1/coordinator.pb.h"

namespace potluck {

class CoordinatorClient {
 public:
  virtual ~CoordinatorClient() = default;

  virtual absl::StatusOr<v1::JobStatus> GetJob(absl::string_view job_id) = 0;

  virtual absl::StatusOr<WorkerStatus> Join(const JoinRequest& request) = 0;
  virtual absl::StatusOr<WorkerStatus> Heartbeat(absl::string_view job_id,
                                                 absl::string_view worker_id) = 0;
  virtual absl::Status Leave(absl::string_view job_id, absl::string_view worker_id,
                             const LeaveReason& reason) = 0;
  virtual absl::StatusOr<uint64_t> ReportFailure(absl::string_view job_id,
                                                 absl::string_view reporter,
                                                 absl::string_view failed) = 0;
  virtual absl::StatusOr<RendezvousResult> Rendezvous(absl::string_view job_id,
                                                      absl::string_view worker_id,
                                                      uint64_t generation) = 0;

  virtual absl::StatusOr<ShardLease> AcquireShard(absl::string_view job_id,
                                                  absl::string_view worker_id) = 0;
  virtual absl::StatusOr<ProgressResult> ReportProgress(const ProgressReport& report) = 0;
  virtual absl::StatusOr<StepResult> EndStep(absl::string_view job_id, absl::string_view worker_id,
                                             uint64_t step) = 0;

  // Uploads the model state of `step`; the coordinator adds its ledger at
  // Commit (the streaming form of Coordinator::BeginCheckpoint).
  virtual absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginCheckpoint(
      absl::string_view job_id, absl::string_view worker_id, uint64_t step) = 0;
  // This member's part of a checkpoint the group uploads together
  // (Coordinator::BeginCheckpointPart).
  virtual absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginCheckpointPart(
      absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
      uint32_t parts) = 0;
  // Reads a committed checkpoint of the job: the newest (kNotFound if there
  // is none) or the one of `step`.
  virtual absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLatestCheckpoint(
      absl::string_view job_id) = 0;
  virtual absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(absl::string_view job_id,
                                                                           uint64_t step) = 0;

  // A file of the job's dataset: "manifest.json", or a shard file the
  // manifest lists (workers without a shared filesystem fetch shards this
  // way). Any other name is kInvalidArgument (no path escapes the dataset).
  virtual absl::StatusOr<std::string> FetchDatasetFile(absl::string_view job_id,
                                                       absl::string_view name) = 0;
};

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_CLIENT_H_
