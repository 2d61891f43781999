#include "coordinator/internal/recovery.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#include "common/status.h"
#include "coordinator/internal/commits.h"
#include "coordinator/internal/membership.h"

namespace potluck::coordinator_internal {

absl::StatusOr<JobMap> LoadJobs(StateDb& db, CheckpointStore& checkpoints, absl::Time now,
                                absl::Duration restart_grace, absl::Duration lease,
                                absl::Duration rendezvous_timeout) {
  JobMap jobs;
  struct Loaded {
    std::optional<cs::JobRecord> record;
    cs::GenerationRecord gen;
    std::vector<cs::WorkerRecord> workers;
    std::map<uint32_t, Shard> shards;
  };
  std::map<std::string, Loaded> loaded;
  RETURN_IF_ERROR(db.Scan("job/", [&](absl::string_view k, absl::string_view value) {
    const std::vector<std::string> parts = absl::StrSplit(k.substr(4), '/');
    const auto corrupt = [&] {
      return absl::DataLossError(absl::StrCat("state key ", k, " does not parse"));
    };
    Loaded& job = loaded[parts[0]];
    const int size = static_cast<int>(value.size());
    if (parts.size() == 1) {
      job.record.emplace();
      if (!job.record->ParseFromArray(value.data(), size)) return corrupt();
    } else if (parts.size() == 2 && parts[1] == "gen") {
      if (!job.gen.ParseFromArray(value.data(), size)) return corrupt();
    } else if (parts.size() == 3 && parts[1] == "w") {
      if (!job.workers.emplace_back().ParseFromArray(value.data(), size)) return corrupt();
    } else if (parts.size() == 3 && parts[1] == "s") {
      uint32_t index = 0;
      cs::ShardRecord shard;
      if (!absl::SimpleAtoi(parts[2], &index) || !shard.ParseFromArray(value.data(), size)) {
        return corrupt();
      }
      job.shards[index] = ShardLedger::FromRecord(shard);
    } else {
      return corrupt();
    }
    return absl::OkStatus();
  }));

  const CallContext ctx{now, lease, rendezvous_timeout};
  for (auto& [job_id, parts] : loaded) {
    if (!parts.record.has_value()) {
      return absl::DataLossError(absl::StrCat("job ", job_id, " has state but no job record"));
    }
    auto job = std::make_unique<Job>();
    job->record = std::move(*parts.record);
    job->gen = std::move(parts.gen);
    job->gen_created = now;
    std::vector<Shard> shards;
    for (auto& [index, shard] : parts.shards) {
      if (index != shards.size()) {
        return absl::DataLossError(
            absl::StrCat("job ", job_id, ": shard ", shards.size(), " is missing from the state"));
      }
      shards.push_back(std::move(shard));
    }
    job->ledger = ShardLedger(std::move(shards), job->record.epoch());
    for (cs::WorkerRecord& record : parts.workers) {
      Worker worker;
      worker.record = std::move(record);
      // The grace period: every live worker gets a fresh lease from now.
      worker.lease_expiry = now + restart_grace;
      job->workers.emplace(worker.record.worker_id(), std::move(worker));
    }
    // The checkpoint store's record is the truth about committed progress: it
    // committed with the model, while the state database may lag it by one
    // commit (a crash between the two writes) and holds uncommitted reports.
    ASSIGN_OR_RETURN(std::optional<std::string> committed,
                     checkpoints.GetRecord(LedgerRecordKey(job_id)));
    if (committed.has_value()) {
      cs::LedgerSnapshot snapshot;
      if (!snapshot.ParseFromString(*committed)) {
        return absl::DataLossError(
            absl::StrCat("job ", job_id, ": the ledger record does not parse"));
      }
      ASSIGN_OR_RETURN(std::vector<uint64_t> steps, checkpoints.ListSteps(job_id));
      if (std::find(steps.begin(), steps.end(), snapshot.step()) == steps.end()) {
        return absl::DataLossError(absl::StrCat("job ", job_id, ": the ledger record is of step ",
                                                snapshot.step(),
                                                ", whose checkpoint is not in the store"));
      }
      RETURN_IF_ERROR(Annotate(job->ledger.ResetTo(snapshot), absl::StrCat("job ", job_id)));
      job->record.set_committed_step(snapshot.step());
      if (CompletedBy(*job, snapshot)) job->record.set_state(v1::JOB_STATE_FINISHED);
    } else {
      job->ledger.RevertUncommitted();
    }
    job->dirty = true;
    bool had_members = false;
    for (auto& [id, worker] : job->workers) had_members = had_members || worker.member();
    if (had_members || HasJoiners(*job)) {
      // Uncommitted progress was reverted: the group resumes from the checkpoint.
      RETURN_IF_ERROR(Regroup(*job, /*rollback=*/true, 0, ctx));
    }
    jobs.emplace(job_id, std::move(job));
  }
  return jobs;
}

}  // namespace potluck::coordinator_internal
