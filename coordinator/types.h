// The values a worker and its coordinator exchange: what Join, Heartbeat,
// Rendezvous, AcquireShard, ReportProgress and EndStep take and return, and
// the read-only views of the ledger and the workers. Plain structs, shared by
// the coordinator core (coordinator.h), the worker's client interface
// (client.h) and the gRPC edge, which converts them to and from the wire.
//
// Thread-safety: plain values.
#ifndef POTLUCK_COORDINATOR_TYPES_H_
#define POTLUCK_COORDINATOR_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

#include "common/failure.h"
#include "potluck/v1/coordinator.pb.h"

namespace potluck {

// How many steps a worker may run past the last step the coordinator
// acknowledged (its last EndStep): with the coordinator out of reach it
// trains on that far, then waits. The coordinator refuses a report or a
// step end further ahead of the group's slowest member than this (plus the
// step in flight), so no member can claim a step the group never reaches.
inline constexpr uint64_t kMaxUnacknowledgedSteps = 32;

// One shard of a job's training data; `size` in the dataset's unit (tokens).
struct ShardSpec {
  std::string name;
  uint64_t size = 0;
  uint64_t checksum = 0;  // the manifest's, fixed at submit (0: not known)
};

struct JoinRequest {
  std::string job_id;
  std::string token;      // a join token for job_id; ignored for open jobs
  std::string worker_id;  // empty: assigned; else [A-Za-z0-9._-]{1,64}, kept
  std::string endpoint;   // where peers reach this worker
};

// Why a worker leaves (Leave); the default: it just stops. A failure that is
// the job's, not the worker's (kDatasetChanged, kCheckpointUnusable),
// becomes the job's JobStatus.problem until the next commit.
struct LeaveReason {
  Failure failure = Failure::kUnspecified;
  std::string message;  // the error that made it stop
};

// What a worker learns from Join and Heartbeat.
struct WorkerStatus {
  std::string worker_id;
  absl::Time lease_expiry;
  uint64_t generation = 0;  // the job's current generation
  // The newest generation that rolled back to the committed checkpoint: a
  // member of an older one computes steps that no longer count.
  uint64_t rollback_generation = 0;
  bool member = false;  // false: waiting in the join window
  // Join's answer only: the credential every later call of this worker
  // proves (gRPC metadata, see coordinator/grpc_client.h).
  std::string member_secret;
  v1::JobState job_state = v1::JOB_STATE_UNSPECIFIED;
};

struct GroupMember {
  std::string worker_id;
  uint32_t rank = 0;
  std::string endpoint;
};

struct GroupView {
  uint64_t generation = 0;
  std::vector<GroupMember> members;  // by rank
  std::string secret;                // 32 random bytes for the peer links
  uint64_t resume_step = 0;          // the step every member starts after
  bool from_checkpoint = false;      // true: load checkpoint resume_step (0: init)
};

struct RendezvousResult {
  enum class State { kReady, kWaiting, kSuperseded };
  State state = State::kWaiting;
  uint64_t generation = 0;  // the current one (kSuperseded: rendezvous there)
  absl::Time deadline;      // kWaiting: when absent members are dropped
  GroupView view;           // kReady only
};

struct ShardLease {
  uint32_t shard = 0;
  std::string name;
  uint64_t size = 0;
  uint64_t offset = 0;  // start reading here
  uint64_t epoch = 0;
  // The shard's checksum when the job was submitted (0: not known): a copy
  // that differs is not the data the job trains on.
  uint64_t checksum = 0;
  // The leased range is tokens [begin, begin + size) of the file `name`;
  // offsets count from begin.
  uint64_t begin = 0;
};

struct ProgressReport {
  std::string job_id;
  std::string worker_id;
  std::string request_id;   // idempotency key: a replay is applied once
  uint64_t generation = 0;  // the generation the worker trains in
  uint32_t shard = 0;
  uint64_t offset = 0;  // consumed through here (exclusive)
  uint64_t step = 0;    // the step whose update contains the range
};

struct ProgressResult {
  bool duplicate = false;  // a replay; nothing changed
  uint64_t consumed_offset = 0;
  bool shard_finished = false;  // released; acquire the next one
};

struct StepResult {
  uint64_t generation = 0;  // differs from the worker's: regroup
  bool regroup = false;
  // Upload this step's checkpoint. Every member of the step gets the same
  // answer (the first one given is kept), so all send their parts of it.
  bool should_checkpoint = false;
  // The job is paused and this is the step to wait after (every member gets
  // it for the same step): wait, heartbeating, until it runs again.
  bool pause = false;
  v1::JobState job_state = v1::JOB_STATE_UNSPECIFIED;
};

struct ShardView {
  enum class State { kPending, kLeased, kConsumed, kDone };  // kConsumed: awaits a checkpoint
  uint32_t id = 0;
  std::string name;
  uint64_t begin = 0;  // the range's first token in the file `name`
  uint64_t size = 0;
  uint64_t committed_offset = 0;
  uint64_t consumed_offset = 0;
  State state = State::kPending;
  std::string holder;
  uint64_t lease_from_offset = 0;
  absl::Time lease_until = absl::InfinitePast();  // the holder's lease
};

struct LedgerView {
  uint64_t epoch = 0;
  uint64_t committed_step = 0;
  std::vector<ShardView> shards;
};

struct WorkerView {
  std::string worker_id;
  std::string endpoint;
  enum class Phase { kWaiting, kMember, kDead } phase = Phase::kWaiting;
  std::string dead_reason;
  absl::Time lease_expiry;
  int rank = -1;  // in the current generation
};

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_TYPES_H_
