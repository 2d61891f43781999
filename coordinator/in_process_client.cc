#include "coordinator/in_process_client.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

#include "common/status.h"
#include "data/dataset.h"

namespace potluck {

namespace {

class InProcessClient final : public CoordinatorClient {
 public:
  explicit InProcessClient(Coordinator* coordinator) : c_(coordinator) {}

  absl::StatusOr<v1::JobStatus> GetJob(absl::string_view job_id) override {
    return c_->GetJob(job_id);
  }
  absl::StatusOr<WorkerStatus> Join(const JoinRequest& request) override {
    return c_->Join(request);
  }
  absl::StatusOr<WorkerStatus> Heartbeat(absl::string_view job_id,
                                         absl::string_view worker_id) override {
    return c_->Heartbeat(job_id, worker_id);
  }
  absl::Status Leave(absl::string_view job_id, absl::string_view worker_id,
                     const LeaveReason& reason) override {
    return c_->Leave(job_id, worker_id, reason);
  }
  absl::StatusOr<uint64_t> ReportFailure(absl::string_view job_id, absl::string_view reporter,
                                         absl::string_view failed) override {
    return c_->ReportFailure(job_id, reporter, failed);
  }
  absl::StatusOr<RendezvousResult> Rendezvous(absl::string_view job_id, absl::string_view worker_id,
                                              uint64_t generation) override {
    return c_->Rendezvous(job_id, worker_id, generation);
  }
  absl::StatusOr<ShardLease> AcquireShard(absl::string_view job_id,
                                          absl::string_view worker_id) override {
    return c_->AcquireShard(job_id, worker_id);
  }
  absl::StatusOr<ProgressResult> ReportProgress(const ProgressReport& report) override {
    return c_->ReportProgress(report);
  }
  absl::StatusOr<StepResult> EndStep(absl::string_view job_id, absl::string_view worker_id,
                                     uint64_t step) override {
    return c_->EndStep(job_id, worker_id, step);
  }
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginCheckpoint(absl::string_view job_id,
                                                                    absl::string_view worker_id,
                                                                    uint64_t step) override {
    return c_->BeginCheckpoint(job_id, worker_id, step);
  }
  absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginCheckpointPart(
      absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
      uint32_t parts) override {
    return c_->BeginCheckpointPart(job_id, worker_id, step, part, parts);
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLatestCheckpoint(
      absl::string_view job_id) override {
    return c_->checkpoints()->OpenLatest(job_id);
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(absl::string_view job_id,
                                                                   uint64_t step) override {
    return c_->checkpoints()->OpenCheckpoint(job_id, step);
  }
  absl::StatusOr<std::string> FetchDatasetFile(absl::string_view job_id,
                                               absl::string_view name) override {
    ASSIGN_OR_RETURN(v1::JobStatus job, c_->GetJob(job_id));
    return ReadDatasetFile(job.spec(), name);
  }

 private:
  Coordinator* const c_;  // not owned
};

}  // namespace

std::unique_ptr<CoordinatorClient> NewInProcessClient(Coordinator* coordinator) {
  return std::make_unique<InProcessClient>(coordinator);
}

absl::StatusOr<std::string> ReadDatasetFile(const v1::JobSpec& job, absl::string_view name) {
  std::filesystem::path dir(job.dataset().manifest());
  if (dir.filename() == kManifestFile) dir = dir.parent_path();
  bool listed = name == kManifestFile;
  if (!listed) {
    ASSIGN_OR_RETURN(Dataset dataset, LoadDataset(dir.string()));
    for (const auto* split : {&dataset.train, &dataset.validation}) {
      for (const ShardInfo& shard : *split) listed |= shard.file == name;
    }
  }
  if (!listed) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' is neither manifest.json nor a shard of job ", job.job_id()));
  }
  const std::string path = (dir / std::string(name)).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, absl::StrCat("opening ", path));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  return bytes.str();
}

}  // namespace potluck
