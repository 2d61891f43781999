#include "worker/internal/shard_cursor.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "common/failure.h"
#include "common/status.h"
#include "common/tensor_view.h"
#include "job/job_spec.h"

namespace potluck {
namespace worker_internal {

namespace {

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return ErrnoStatus(errno, absl::StrCat("writing ", temp));
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) return absl::InternalError(absl::StrCat("renaming ", temp, ": ", error.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> OpenJobDataset(Session* session, const v1::JobSpec& job,
                                       const std::string& state_dir) {
  std::filesystem::path dir(job.dataset().manifest());
  if (dir.filename() == kManifestFile) dir = dir.parent_path();
  auto local = LoadDataset(dir.string());
  if (local.ok()) return *local;
  CoordinatorClient* client = session->client();
  const std::string& job_id = session->job_id();
  const std::string cache = absl::StrCat(state_dir, "/cache/", job_id);
  std::filesystem::create_directories(cache);
  ASSIGN_OR_RETURN(std::string manifest,
                   session->Retry([&] { return client->FetchDatasetFile(job_id, kManifestFile); }));
  RETURN_IF_ERROR(WriteFile(cache + "/" + kManifestFile, manifest));
  ASSIGN_OR_RETURN(Dataset dataset, LoadDataset(cache));
  for (const auto* split : {&dataset.train, &dataset.validation}) {
    for (const ShardInfo& shard : *split) {
      const std::string path = cache + "/" + shard.file;
      // A cached shard that verifies is kept; TokenShard::Open checks it
      // (its checksum included). One that arrives damaged is fetched once
      // more before the worker gives up on it.
      absl::Status verified = TokenShard::Open(path, dataset.vocab_size).status();
      for (int fetch = 0; fetch < 2 && !verified.ok(); ++fetch) {
        ASSIGN_OR_RETURN(std::string bytes, session->Retry([&] {
          return client->FetchDatasetFile(job_id, shard.file);
        }));
        RETURN_IF_ERROR(WriteFile(path, bytes));
        verified = TokenShard::Open(path, dataset.vocab_size).status();
      }
      RETURN_IF_ERROR(
          Annotate(verified, absl::StrCat("fetched from the coordinator: ", shard.file)));
    }
  }
  return dataset;
}

ShardCursor::ShardCursor(Session* session, const Dataset* dataset, const v1::JobSpec& job)
    : session_(session),
      dataset_(dataset),
      context_(job.model().gpt().context_length()),
      job_(job) {}

absl::StatusOr<const TokenShard*> ShardCursor::Shard(const std::string& name) {
  auto it = shards_.find(name);
  if (it != shards_.end()) return it->second.get();
  auto shard = TokenShard::Open(dataset_->dir + "/" + name, dataset_->vocab_size);
  if (shard.status().code() == absl::StatusCode::kDataLoss) {
    // A corrupt shard is not the job's data either; rereading will not help.
    return WithFailure(shard.status(), Failure::kDatasetChanged);
  }
  RETURN_IF_ERROR(shard.status());
  return (shards_[name] = *std::move(shard)).get();
}

absl::StatusOr<StepData> ShardCursor::ReadStep(int world_size, uint64_t report_step) {
  // Whole micro-batches (SequencesPerStep, which the coordinator's
  // plausibility check of progress reports shares).
  const int64_t micro_batch = MicroBatchSize(job_);
  const int64_t accumulation = SequencesPerStep(job_, world_size) / micro_batch;
  StepData data;
  data.cursor = held_;
  bool step_done = false;
  for (int64_t i = 0; i < accumulation && !step_done; ++i) {
    RETURN_IF_ERROR(Read(micro_batch, report_step, &data, &step_done));
  }
  return data;
}

// Reads up to `sequences` sequences into one batch of `data`, leasing a
// shard when none is held. Advances its cursor and records the offset
// reached per shard. Sets *step_done when this step must read no further:
// the slot has no pending shard, the coordinator is unreachable, or a shard
// was finished (the coordinator releases it only when the step's report
// arrives, so leasing again now would hand the same shard back).
absl::Status ShardCursor::Read(int64_t sequences, uint64_t report_step, StepData* data,
                               bool* step_done) {
  std::optional<HeldShard>* cursor = &data->cursor;
  std::vector<std::pair<uint32_t, uint64_t>>* touched = &data->touched;
  const int64_t width = context_ + 1;
  std::vector<uint32_t> tokens;
  int64_t got = 0;
  while (got < sequences) {
    if (!cursor->has_value()) {
      auto lease = session_->client()->AcquireShard(session_->job_id(), session_->worker_id());
      if (!lease.ok()) {
        const absl::StatusCode code = lease.status().code();
        data->unreachable = code == absl::StatusCode::kUnavailable;
        if (code == absl::StatusCode::kResourceExhausted || data->unreachable) {
          *step_done = true;
          break;
        }
        return lease.status();
      }
      if (lease->epoch > epoch_) {
        // The next epoch's: read at the group's next epoch boundary. The
        // coordinator keeps the lease for this worker meanwhile.
        *step_done = true;
        break;
      }
      ASSIGN_OR_RETURN(const TokenShard* shard, Shard(lease->name));
      if (lease->checksum != 0 && shard->checksum() != lease->checksum) {
        return WithFailure(
            absl::DataLossError(absl::StrFormat(
                "shard %s is not the data job %s was submitted with: its checksum is %016x, "
                "the job's %016x (the dataset changed after the submit; restore it, or submit "
                "a new job for the new data)",
                lease->name, session_->job_id(), shard->checksum(), lease->checksum)),
            Failure::kDatasetChanged);
      }
      if (lease->begin + lease->size > shard->size()) {
        return WithFailure(
            absl::DataLossError(absl::StrCat(
                "shard ", lease->name, " holds ", shard->size(), " tokens, fewer than the range [",
                lease->begin, ", ", lease->begin + lease->size, ") job ", session_->job_id(),
                " leased (the dataset changed after the submit)")),
            Failure::kDatasetChanged);
      }
      *cursor =
          HeldShard{lease->shard, lease->name, lease->size, lease->offset, lease->begin, shard};
    }
    HeldShard& held = **cursor;
    if (held.offset + width > held.size) {
      // Leased at its tail (a shard shorter than one sequence): nothing to
      // train, so report it finished at once and lease another.
      RETURN_IF_ERROR(session_->FlushReports());
      auto reported =
          session_->client()->ReportProgress(session_->Report(held.id, held.size, report_step));
      if (!reported.ok()) {
        if (reported.status().code() == absl::StatusCode::kUnavailable) {
          data->unreachable = true;
          *step_done = true;
          break;
        }
        return Annotate(reported.status(), "reporting a finished shard");
      }
      cursor->reset();
      held_.reset();
      continue;
    }
    tokens.resize(static_cast<size_t>((got + 1) * width));
    RETURN_IF_ERROR(
        held.tokens->Read(held.begin + held.offset,
                          absl::MakeSpan(tokens).subspan(static_cast<size_t>(got * width), width)));
    held.offset += context_;
    ++got;
    // What remains after the last whole sequence is shorter than one: the
    // shard is finished with this step (its report says offset = size).
    // The coordinator releases it only when that report arrives after the
    // step, so this step reads no further.
    const bool finished = held.offset + width > held.size;
    const uint64_t reported = finished ? held.size : held.offset;
    if (touched->empty() || touched->back().first != held.id) {
      touched->emplace_back(held.id, reported);
    } else {
      touched->back().second = reported;
    }
    if (finished) {
      cursor->reset();
      *step_done = true;
      break;
    }
  }
  if (got == 0) return absl::OkStatus();
  torch::Tensor all = torch::from_blob(tokens.data(), {got * width}, torch::kInt32)
                          .to(torch::kLong)
                          .view({got, width});
  data->batches.push_back(
      Batch{all.narrow(1, 0, context_).contiguous(), all.narrow(1, 1, context_).contiguous()});
  return absl::OkStatus();
}

absl::Status ShardCursor::AgreeOnEpoch(Communicator* comm, uint64_t seen, absl::Time deadline) {
  std::vector<int64_t> epochs(comm->world_size());
  epochs[comm->rank()] = static_cast<int64_t>(seen);
  RETURN_IF_ERROR(comm->AllGather(TensorView::Of(epochs.data(), epochs.size()), deadline));
  epoch_ = static_cast<uint64_t>(*std::max_element(epochs.begin(), epochs.end()));
  return absl::OkStatus();
}

}  // namespace worker_internal
}  // namespace potluck
