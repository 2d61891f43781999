#include "coordinator/internal/jobs.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

#include "common/status.h"
#include "data/dataset.h"
#include "job/job_spec.h"

namespace potluck::coordinator_internal {

absl::StatusOr<std::vector<ShardSpec>> LoadShardsFromManifest(const v1::JobSpec& spec) {
  std::filesystem::path path(spec.dataset().manifest());
  if (path.filename() == kManifestFile) path = path.parent_path();
  auto dataset = LoadDataset(path.string());
  if (!dataset.ok()) return Annotate(dataset.status(), "dataset.manifest");
  std::vector<ShardSpec> shards;
  for (const ShardInfo& shard : dataset->train) {
    shards.push_back({shard.file, shard.tokens, shard.checksum});
  }
  return shards;
}

absl::Status CheckTrainable(const v1::JobSpec& spec, const std::vector<ShardSpec>& shards) {
  if (!spec.model().has_gpt()) return absl::OkStatus();
  const uint64_t context = spec.model().gpt().context_length();
  if (context == 0) return absl::OkStatus();  // ValidateJobSpec names that
  uint64_t sequences = 0;
  for (const ShardSpec& shard : shards) {
    // A sequence reads context + 1 tokens: a shorter shard holds none, and
    // an epoch could never finish it.
    if (shard.size < context + 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dataset.manifest: shard ", shard.name, " holds ", shard.size,
          " tokens, fewer than one sequence (context_length ", context, " + 1 = ", context + 1,
          "): remove it or prepare the data again (potluck data prepare folds a short last "
          "shard into the one before)"));
    }
    sequences += (shard.size - 1) / context;
  }
  const uint64_t global_batch = spec.batch().global_batch_size();
  if (sequences < global_batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset.manifest: the train split holds ", sequences, " sequences of context_length ",
        context, ", fewer than one global batch (batch.global_batch_size ", global_batch,
        "): not one step could be trained"));
  }
  return absl::OkStatus();
}

uint64_t RangeTokens(const v1::JobSpec& spec, uint64_t total_tokens) {
  const uint64_t context = spec.model().has_gpt() ? spec.model().gpt().context_length() : 0;
  const uint64_t global = spec.batch().global_batch_size();
  if (context == 0 || global == 0) return std::numeric_limits<uint64_t>::max();
  // k global batches of sequences, k as small as kMaxLedgerRanges allows.
  const uint64_t batch_tokens = global * context + 1;
  const uint64_t batches = (total_tokens + batch_tokens - 1) / batch_tokens;
  const uint64_t k = std::max<uint64_t>(1, (batches + kMaxLedgerRanges - 1) / kMaxLedgerRanges);
  return k * global * context + 1;
}

absl::StatusOr<std::unique_ptr<Job>> NewJob(const v1::JobSpec& spec,
                                            const std::vector<ShardSpec>& shard_specs,
                                            absl::Time now) {
  if (shard_specs.empty()) {
    return absl::InvalidArgumentError("dataset.manifest: the dataset has no train shards");
  }
  RETURN_IF_ERROR(CheckTrainable(spec, shard_specs));
  uint64_t total = 0;
  for (const ShardSpec& shard_spec : shard_specs) {
    if (shard_spec.size == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset.manifest: shard ", shard_spec.name, " is empty"));
    }
    total += shard_spec.size;
  }
  const uint64_t range = RangeTokens(spec, total);
  std::vector<Shard> shards;
  for (const ShardSpec& shard_spec : shard_specs) {
    // Whole ranges of `range` tokens; the file's remainder joins its last.
    const uint64_t pieces = std::max<uint64_t>(1, shard_spec.size / range);
    for (uint64_t piece = 0; piece < pieces; ++piece) {
      Shard shard;
      shard.name = shard_spec.name;
      shard.begin = piece * range;
      shard.size = piece + 1 < pieces ? range : shard_spec.size - shard.begin;
      shard.checksum = shard_spec.checksum;
      shards.push_back(std::move(shard));
    }
  }
  auto job = std::make_unique<Job>();
  *job->record.mutable_spec() = spec;
  job->record.set_state(v1::JOB_STATE_RUNNING);
  job->record.set_last_checkpoint_unix_ms(absl::ToUnixMillis(now));
  job->ledger = ShardLedger(std::move(shards), 0);
  job->ledger.MarkAllDirty();
  job->gen_created = now;
  job->dirty = true;
  return job;
}

absl::Status SetJobState(Job& job, v1::JobState to) {
  const v1::JobState from = job.record.state();
  if (from == to) return absl::OkStatus();
  const bool terminal = from == v1::JOB_STATE_CANCELLED || from == v1::JOB_STATE_FINISHED;
  if (terminal || (to == v1::JOB_STATE_RUNNING && from != v1::JOB_STATE_PAUSED)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job.id(), " is ", JobStateName(from),
                                                      "; cannot make it ", JobStateName(to)));
  }
  job.record.set_state(to);
  job.record.set_pause_at_step(0);
  if (to == v1::JOB_STATE_PAUSED) {
    // Members are at most a step apart: the step after the furthest one's
    // last is one every member reaches, and none has ended yet. Each waits
    // after it (EndStep says so), so no member waits in a collective for
    // one that stopped a step earlier.
    uint64_t furthest = job.record.committed_step();
    for (const auto& [id, worker] : job.workers) {
      if (worker.member()) furthest = std::max(furthest, worker.record.last_ended_step());
    }
    job.record.set_pause_at_step(furthest + 1);
  }
  job.dirty = true;
  return absl::OkStatus();
}

absl::StatusOr<v1::JobStatus> ExtendJob(Job& job, uint64_t max_steps) {
  const uint64_t current = job.record.spec().max_steps();
  if (current == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_steps: job ", job.id(), " has none: it runs until its epochs are trained"));
  }
  if (max_steps <= current) {
    return absl::InvalidArgumentError(absl::StrCat("max_steps: job ", job.id(), " already runs to ",
                                                   current, "; got ", max_steps));
  }
  const uint64_t epochs = std::max<uint64_t>(job.record.spec().dataset().epochs(), 1);
  if (job.record.state() == v1::JOB_STATE_CANCELLED || job.ledger.epoch() >= epochs) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job.id(),
                     job.ledger.epoch() >= epochs ? " has trained all its epochs" : " is cancelled",
                     "; it cannot be extended"));
  }
  job.record.mutable_spec()->set_max_steps(max_steps);
  if (job.record.state() == v1::JOB_STATE_FINISHED) job.record.set_state(v1::JOB_STATE_RUNNING);
  job.dirty = true;
  return JobStatusOf(job);
}

}  // namespace potluck::coordinator_internal
