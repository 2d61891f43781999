// The coordinator's in-memory state of one job (its record, workers,
// generation and ledger) and the small queries every part asks of it.
// Private to coordinator/.
//
// Ownership and locking: a Job is owned by the facade (coordinator.cc) and
// touched only under its lock; the parts (membership, progress, jobs,
// recovery) take a locked Job&, change it, and mark what must be persisted
// (dirty, dirty_workers, the ledger's own dirty set). TakeChanges() turns
// those marks into the state-database writes of the group commit.
#ifndef POTLUCK_COORDINATOR_INTERNAL_JOB_STATE_H_
#define POTLUCK_COORDINATOR_INTERNAL_JOB_STATE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "coordinator/internal/ledger.h"
#include "coordinator/internal/state.pb.h"
#include "coordinator/internal/state_db.h"
#include "coordinator/types.h"

namespace potluck::coordinator_internal {

namespace cs = ::potluck::coordinator_state;

inline constexpr size_t kMaxRecentRequests = 256;
inline constexpr size_t kSecretBytes = 32;
inline constexpr size_t kMaxIdBytes = 64;
// Dead workers' records a job keeps (what `job workers` shows of them).
inline constexpr size_t kMaxDeadWorkers = 64;
// Live workers one join token may have in a job when its spec's
// access.max_workers_per_token is 0.
inline constexpr uint32_t kDefaultWorkersPerToken = 8;

// What a part needs from the facade for one call: the time it is, and the
// coordinator's timing options.
struct CallContext {
  absl::Time now;
  absl::Duration lease;
  absl::Duration rendezvous_timeout;
};

// A progress report as applied, kept by its request id to spot replays.
struct RecentReport {
  uint32_t shard = 0;
  uint64_t offset = 0;
  uint64_t step = 0;
};

struct Worker {
  cs::WorkerRecord record;
  absl::Time lease_expiry = absl::InfinitePast();
  // The last kMaxRecentRequests reports' ids. Not persisted: a replay only
  // matters within the generation it was made in, and a restart, like any
  // rollback, voids every earlier generation's reports.
  absl::flat_hash_map<std::string, RecentReport> recent;
  std::deque<std::string> recent_order;  // oldest first
  // The tokens this worker's reports consumed in `progress_step` (memory
  // only, like `recent`): at most MaxTokensPerStep of its share.
  uint64_t progress_step = 0;
  uint64_t progress_tokens = 0;

  // A call since its last Join (memory only): a joiner is admitted only
  // once it is alive this way, so a Join alone never makes a generation.
  bool called_since_join = false;

  bool alive() const { return record.phase() != cs::WORKER_PHASE_DEAD; }
  bool member() const { return record.phase() == cs::WORKER_PHASE_MEMBER; }
};

struct Job {
  cs::JobRecord record;
  std::map<std::string, Worker, std::less<>> workers;
  cs::GenerationRecord gen;
  std::set<std::string, std::less<>> arrived;  // at the current generation's rendezvous
  absl::Time gen_created;
  ShardLedger ledger;
  bool commit_in_progress = false;
  // EndStep's answers for the last few steps (memory only: a restart rolls
  // the group back anyway): every member of a step gets the first one.
  struct StepAnswer {
    bool checkpoint = false;
    bool pause = false;
  };
  std::map<uint64_t, StepAnswer> step_answers;
  // ReportFailure's evidence in the current generation: accused member ->
  // the members that reported it (memory only; every regroup clears it).
  std::map<std::string, std::set<std::string>, std::less<>> accusations;
  // No alive worker's lease ends before this: expiry checks skip their scan
  // until then (every lease set lowers it if it ends sooner).
  absl::Time next_lease_check = absl::InfinitePast();
  // The group-commit ticket of the last write of the record and generation:
  // a call that reads them waits for it, so nobody acts on a generation
  // that a crash could still take back.
  uint64_t state_ticket = 0;
  // What TakeChanges must write.
  bool dirty = false;  // record and generation
  std::set<std::string> dirty_workers;

  const std::string& id() const { return record.spec().job_id(); }
  void TouchWorker(const Worker& worker) { dirty_workers.insert(worker.record.worker_id()); }
};

// The fewest members a generation forms with (access.min_workers, at least 1).
int MinWorkers(const Job& job);
// The rank of `worker_id` in the current generation, or -1.
int RankOf(const Job& job, absl::string_view worker_id);

// kOk while the job runs; kOutOfRange once finished ("no more data"),
// kFailedPrecondition while paused or cancelled.
absl::Status RequireRunning(const Job& job);

v1::JobStatus JobStatusOf(const Job& job);
WorkerStatus StatusOf(const Job& job, const Worker& worker);
GroupView View(const Job& job);

// The state-database writes for what changed in `job` since the last call,
// in key order within each kind; clears the marks. `record_changed` says
// whether the job record and generation are among them. Dead workers'
// records beyond the newest kMaxDeadWorkers (by join order) are deleted
// here, where no caller holds a reference to one.
std::vector<StateWrite> TakeChanges(Job& job, bool* record_changed);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_JOB_STATE_H_
