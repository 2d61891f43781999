#include "coordinator/internal/job_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

#include "common/failure.h"
#include "coordinator/internal/state_db.h"
#include "job/job_spec.h"

namespace potluck::coordinator_internal {

int MinWorkers(const Job& job) {
  return std::max<int>(1, static_cast<int>(job.record.spec().access().min_workers()));
}

int RankOf(const Job& job, absl::string_view worker_id) {
  for (int i = 0; i < job.gen.members_size(); ++i) {
    if (job.gen.members(i) == worker_id) return i;
  }
  return -1;
}

absl::Status RequireRunning(const Job& job) {
  if (job.record.state() == v1::JOB_STATE_RUNNING) return absl::OkStatus();
  if (job.record.state() == v1::JOB_STATE_FINISHED) {
    return absl::OutOfRangeError(absl::StrCat("job ", job.id(), " is finished: no more data"));
  }
  const absl::Status refused = absl::FailedPreconditionError(
      absl::StrCat("job ", job.id(), " is ", JobStateName(job.record.state())));
  if (job.record.state() == v1::JOB_STATE_CANCELLED) {
    return WithFailure(refused, Failure::kJobCancelled);
  }
  return refused;
}

v1::JobStatus JobStatusOf(const Job& job) {
  v1::JobStatus status;
  *status.mutable_spec() = job.record.spec();
  status.set_state(job.record.state());
  status.set_committed_step(job.record.committed_step());
  status.set_epoch(job.ledger.epoch());
  uint32_t live = 0;
  for (const auto& [id, worker] : job.workers) live += worker.alive() ? 1 : 0;
  status.set_live_workers(live);
  status.set_problem(job.record.problem());
  return status;
}

WorkerStatus StatusOf(const Job& job, const Worker& worker) {
  WorkerStatus status;
  status.worker_id = worker.record.worker_id();
  status.lease_expiry = worker.lease_expiry;
  status.generation = job.gen.number();
  status.rollback_generation = job.record.rollback_generation();
  status.member = worker.member();
  status.job_state = job.record.state();
  return status;
}

GroupView View(const Job& job) {
  GroupView view;
  view.generation = job.gen.number();
  for (int i = 0; i < job.gen.members_size(); ++i) {
    view.members.push_back({job.gen.members(i), static_cast<uint32_t>(i), job.gen.endpoints(i)});
  }
  view.secret = job.gen.secret();
  view.resume_step = job.gen.resume_step();
  view.from_checkpoint = job.gen.from_checkpoint();
  return view;
}

namespace {

// Deletes the records of the dead workers that joined longest ago, down to
// kMaxDeadWorkers; returns their ids.
std::vector<std::string> PruneDeadWorkers(Job& job) {
  std::vector<const Worker*> dead;
  const auto& members = job.gen.members();
  for (const auto& [id, worker] : job.workers) {
    // (A generation's member is regrouped away in the call that marks it
    // dead; should one not be, its record stays while the generation does.)
    if (!worker.alive() && std::find(members.begin(), members.end(), id) == members.end()) {
      dead.push_back(&worker);
    }
  }
  if (dead.size() <= kMaxDeadWorkers) return {};
  std::sort(dead.begin(), dead.end(), [](const Worker* a, const Worker* b) {
    return a->record.join_seq() < b->record.join_seq();
  });
  std::vector<std::string> pruned;
  for (size_t i = 0; i + kMaxDeadWorkers < dead.size(); ++i) {
    pruned.push_back(dead[i]->record.worker_id());
  }
  for (const std::string& id : pruned) {
    job.workers.erase(id);
    job.dirty_workers.erase(id);
    job.accusations.erase(id);
  }
  return pruned;
}

}  // namespace

std::vector<StateWrite> TakeChanges(Job& job, bool* record_changed) {
  std::vector<StateWrite> puts;
  for (const std::string& id : PruneDeadWorkers(job)) {
    puts.emplace_back(WorkerKey(job.id(), id), std::nullopt);
  }
  *record_changed = job.dirty;
  if (job.dirty) {
    job.record.set_epoch(job.ledger.epoch());
    puts.emplace_back(JobKey(job.id()), job.record.SerializeAsString());
    puts.emplace_back(GenerationKey(job.id()), job.gen.SerializeAsString());
  }
  for (const std::string& id : job.dirty_workers) {
    puts.emplace_back(WorkerKey(job.id(), id), job.workers.at(id).record.SerializeAsString());
  }
  for (const uint32_t shard : job.ledger.TakeDirty()) {
    puts.emplace_back(ShardKey(job.id(), shard),
                      ShardLedger::ToRecord(job.ledger.shards()[shard]).SerializeAsString());
  }
  job.dirty = false;
  job.dirty_workers.clear();
  return puts;
}

}  // namespace potluck::coordinator_internal
