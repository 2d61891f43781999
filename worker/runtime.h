// WorkerRuntime: one worker of a job, from Join to the last step: it
// heartbeats from its own thread, forms each generation's group, leases
// shards from the coordinator's ledger, trains with the job's Trainer,
// reports progress, uploads checkpoints when the coordinator asks, and
// regroups whenever membership changes.
//
// Its parts (worker/internal/, docs/architecture.md):
//  - Session: join, the heartbeat thread, rejoin, generations, rendezvous,
//    buffered reports and the outage tolerance, on WorkerOptions.clock.
//    Its waits follow the job's lease: heartbeats every
//    min(heartbeat_interval, lease / 3); after a failed collective the
//    survivors wait a lease's worth (lease + one heartbeat) for the
//    coordinator to notice the dead peer and make a new generation.
//  - WorkerGroup: the generation's communicators, connected with
//    collectives' ConnectGroup. The TCP group carries the runtime's own small
//    collectives (sample counts, state digests, the epoch); the trainer's
//    run on WorkerOptions.connect_data's communicator when given.
//  - AgreeOnState: invariant 3. After every regroup and before every
//    checkpoint upload the members compare a digest of their state; a
//    mismatch is logged, counted (state_repairs()) and repaired by a
//    broadcast from the member furthest on (rank 0 at equal steps).
//  - ShardCursor: the leased shard and a read position that only a step
//    that was applied keeps (a failed step puts it back); the group's epoch.
//  - StepLoop + StepPolicy: regroup and redo a failed step, the epoch's end
//    and the job's; a policy per mode says what a step is.
//
// Sync mode: each step reads this worker's micro-batches, all-reduces the
// sample counts (everyone out of data: the epoch's end, when rank 0's
// checkpoint commits the epoch's shards) and then the gradients, queues a
// report per shard touched and ends the step with the coordinator.
//
// DiLoCo (mode diloco): inner steps run without any collective; the step
// that ends a round runs the exchange, and the round is the coordinator's
// step: reports carry it, EndStep and checkpoints happen at round ends, and
// max_steps (inner steps) becomes ceil(max_steps / H) rounds. A worker whose
// slot has no data left ends its rounds at once and takes part in the
// exchanges with nothing; when all have none, the epoch ends. Members keep
// their own inner state across regroups while their outer state agrees.
//
// Regroup: the communicators of the old generation are aborted, the worker
// rendezvouses on the new one and gets the group's state: from the
// coordinator's checkpoint when the generation rolls back (a member left),
// from rank 0 when it only adds joiners; then AgreeOnState. While the
// coordinator is unreachable the worker keeps training on the shard it
// holds and buffers its reports, for up to `outage_tolerance`.
//
// Thread-safety: Run() on one thread; Stop() from any thread (not from a
// signal handler: have a thread wait for the signal and call it).
#ifndef POTLUCK_WORKER_RUNTIME_H_
#define POTLUCK_WORKER_RUNTIME_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "common/clock.h"
#include "coordinator/client.h"
#include "worker/model.h"

namespace potluck {

struct WorkerProgress {
  uint64_t step = 0;  // (inner) optimizer steps this worker has taken
  uint64_t max_steps = 0;
  uint64_t rounds = 0;       // diloco: rounds the group has completed
  bool round_ended = false;  // diloco: this step ended a round
  double loss = 0;
  int rank = 0;
  int world_size = 1;
  uint64_t generation = 0;
  double tokens_per_s = 0;  // this worker's, over its last step
  // Sequences the whole group trained in the step (sync), or in the round
  // that just ended (diloco; 0 on the round's other steps).
  int64_t group_samples = 0;
  // Rank 0, every job.eval_every_steps: the validation loss after the step;
  // NaN on other steps and ranks.
  double validation_loss = std::numeric_limits<double>::quiet_NaN();
};

// A generation this worker formed, and when (for `potluck bench recovery`):
// `heard` is when it first learned the generation existed, `formed` when its
// group was connected and agreed on the state.
struct WorkerGroupEvent {
  uint64_t generation = 0;
  std::string backend;  // the trainer's communicator: Communicator::backend()
  int rank = 0;
  int world_size = 1;
  bool from_checkpoint = false;
  uint64_t resume_step = 0;
  absl::Time heard;
  absl::Time formed;
};

struct WorkerOptions {
  std::string job_id;
  std::string token;
  // Keeps the worker's id (so a restarted worker keeps its identity) and the
  // cache of fetched shards. Created if missing. Required.
  std::string state_dir;
  std::string bind_host = "127.0.0.1";  // where peer links listen
  std::string advertise_host;           // what peers dial; empty = bind_host
  int threads = 1;                      // compute threads for this worker
  // At most this; shorter when the job's lease asks for it (lease / 3).
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  absl::Duration collective_timeout = absl::Seconds(30);
  // How long to keep going without the coordinator before giving up.
  absl::Duration outage_tolerance = absl::Minutes(2);
  uint64_t max_steps = 0;  // 0 = the job's max_steps (which must then be set)
  // What every wait and timestamp of the worker reads. Not owned.
  Clock* clock = Clock::Real();
  // Fault injection (tests, the chaos suite): from this step on the worker's
  // parameters turn NaN before it trains, as a broken GPU or a bad kernel
  // would make its gradients. 0 = never.
  uint64_t fault_nan_from_step = 0;
  // The communicator the trainer's collectives (gradients, state broadcasts)
  // run on, made for each generation once its TCP group has formed: how the
  // CLI's `--backend mpi|nccl` plugs in. `control` is that TCP group (it
  // keeps carrying the runtime's own small collectives, and can hand rank
  // 0's NCCL id to the others). Empty: the TCP group carries everything.
  std::function<absl::StatusOr<std::unique_ptr<Communicator>>(
      const GroupView& view, int rank, Communicator* control, absl::Time deadline)>
      connect_data;
  // Called after every step on the training thread.
  std::function<void(const WorkerProgress&)> on_step;
  // Called after every generation this worker formed, on the training thread.
  std::function<void(const WorkerGroupEvent&)> on_group;
};

class WorkerRuntime {
 public:
  // `client` is not owned and must outlive the runtime.
  static absl::StatusOr<std::unique_ptr<WorkerRuntime>> Create(CoordinatorClient* client,
                                                               WorkerOptions options);
  ~WorkerRuntime();

  // Trains until max_steps is reached and committed, the job finishes or is
  // cancelled (found_finished() tells a job that had finished before this
  // worker joined), Stop() is called (then the worker leaves the group), or an
  // error this worker cannot get past (e.g. its own non-finite gradient:
  // it leaves, so the others regroup without it).
  absl::Status Run();
  // Finish or abandon the current step, report, leave. Any thread.
  void Stop();

  const std::string& worker_id() const;
  bool found_finished() const;
  // After Run: the trainer's step and state digest (tests compare workers).
  uint64_t step() const;
  uint64_t rounds() const;  // diloco
  uint64_t StateDigest() const;
  uint64_t SharedDigest() const;  // Trainer::OuterDigest
  // Divergent states this worker's group found and repaired (at regroups and
  // checkpoints; a diloco joiner's expected mismatch is not counted).
  uint64_t state_repairs() const;
  Model* model();

 private:
  class Impl;
  explicit WorkerRuntime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace potluck

#endif  // POTLUCK_WORKER_RUNTIME_H_
