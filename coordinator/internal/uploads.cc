#include "coordinator/internal/uploads.h"

#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "common/status.h"
#include "coordinator/internal/state_db.h"

namespace potluck::coordinator_internal {
namespace {

// Counts an upload's bytes against CoordinatorOptions.max_checkpoint_bytes;
// once over, the upload stays refused.
class UploadBudget {
 public:
  UploadBudget(uint64_t max_bytes, uint64_t step) : max_bytes_(max_bytes), step_(step) {}
  absl::Status Take(size_t bytes) {
    if (status_.ok() && bytes > max_bytes_ - used_) status_ = Exceeded(max_bytes_, step_);
    if (status_.ok()) used_ += bytes;
    return status_;
  }
  const absl::Status& status() const { return status_; }

  static absl::Status Exceeded(uint64_t max_bytes, uint64_t step) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the checkpoint of step ", step, " is over the coordinator's limit of ",
                     max_bytes, " bytes (--max-checkpoint-bytes); nothing is committed"));
  }

 private:
  const uint64_t max_bytes_;
  const uint64_t step_;
  uint64_t used_ = 0;
  absl::Status status_;
};

// A CheckpointWriter whose Commit adds the ledger record, under the
// coordinator's checks.
class LedgerCommittingWriter final : public CheckpointWriter {
 public:
  LedgerCommittingWriter(Uploads* uploads, CommitGate* gate, std::string job_id,
                         std::string worker_id, uint64_t step, uint64_t max_bytes,
                         std::unique_ptr<CheckpointWriter> inner)
      : uploads_(uploads),
        gate_(gate),
        job_id_(std::move(job_id)),
        worker_id_(std::move(worker_id)),
        step_(step),
        budget_(max_bytes, step),
        inner_(std::move(inner)) {}

  absl::Status BeginEntry(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape) override {
    layout_.push_back({std::string(name), kind, dtype, shape});
    return inner_->BeginEntry(name, kind, dtype, std::move(shape));
  }
  absl::Status Append(const void* data, size_t size_bytes) override {
    RETURN_IF_ERROR(budget_.Take(size_bytes));
    return inner_->Append(data, size_bytes);
  }
  absl::Status Commit(absl::Span<const Record> records) override;

 private:
  Uploads* const uploads_;  // not owned; outlives the writer (the store's rule)
  CommitGate* const gate_;  // not owned; likewise
  const std::string job_id_;
  const std::string worker_id_;
  const uint64_t step_;
  UploadBudget budget_;
  Layout layout_;  // of the entries begun so far
  std::unique_ptr<CheckpointWriter> inner_;
};

// kPermissionDenied unless `check`'s worker is rank 0 of its generation:
// only it uploads a whole checkpoint (members upload parts).
absl::Status RequireRankZero(const PendingCommit& check, absl::string_view worker_id,
                             uint64_t step) {
  if (check.rank == 0) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "worker ", worker_id, " is rank ", check.rank, " of generation ", check.generation,
      ": a whole checkpoint (step ", step, ") comes from rank 0; members upload parts"));
}

}  // namespace

absl::Status LedgerCommittingWriter::Commit(absl::Span<const Record> records) {
  RETURN_IF_ERROR(budget_.status());
  for (const Record& record : records) {
    if (absl::StartsWith(record.key, "coordinator/")) {
      return absl::InvalidArgumentError(
          absl::StrCat("record key ", record.key, " is reserved for the coordinator"));
    }
  }
  RETURN_IF_ERROR(uploads_->CheckLayoutOf(job_id_, layout_, step_));
  ASSIGN_OR_RETURN(PendingCommit pending, gate_->PrepareCommit(job_id_, worker_id_, step_, true));
  std::vector<Record> all(records.begin(), records.end());
  all.push_back({LedgerRecordKey(job_id_), pending.snapshot.SerializeAsString()});
  return gate_->FinishCommit(job_id_, pending, inner_->Commit(all));
}

namespace {

// A part of a split upload: spooled as it arrives, handed to the coordinator
// at Finish.
class PartUploadWriter final : public CheckpointPartWriter {
 public:
  PartUploadWriter(Uploads* uploads, std::string job_id, std::string worker_id, uint64_t step,
                   uint32_t part, uint32_t parts, uint64_t max_bytes,
                   std::unique_ptr<SpooledPart> spooled)
      : uploads_(uploads),
        job_id_(std::move(job_id)),
        worker_id_(std::move(worker_id)),
        step_(step),
        part_(part),
        parts_(parts),
        budget_(max_bytes, step),
        spooled_(std::move(spooled)) {}

  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count) override {
    RETURN_IF_ERROR(Usable());
    return spooled_->BeginSlice(name, kind, dtype, std::move(shape), offset, count);
  }
  absl::Status Append(const void* data, size_t size_bytes) override {
    RETURN_IF_ERROR(Usable());
    RETURN_IF_ERROR(budget_.Take(size_bytes));
    return spooled_->Append(data, size_bytes);
  }
  absl::StatusOr<bool> Finish() override {
    RETURN_IF_ERROR(Usable());
    RETURN_IF_ERROR(budget_.status());
    RETURN_IF_ERROR(spooled_->Close());
    return uploads_->HandInPart(job_id_, worker_id_, step_, part_, parts_, std::move(spooled_));
  }

 private:
  absl::Status Usable() const {
    if (spooled_ != nullptr) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("part ", part_, " of step ", step_, " was handed in already"));
  }

  Uploads* const uploads_;  // not owned; outlives the writer
  const std::string job_id_;
  const std::string worker_id_;
  const uint64_t step_;
  const uint32_t part_;
  const uint32_t parts_;
  UploadBudget budget_;
  std::unique_ptr<SpooledPart> spooled_;
};

}  // namespace

absl::Status Uploads::Commit(absl::string_view job_id, absl::string_view worker_id, uint64_t step,
                             absl::Span<const TensorToSave> tensors,
                             absl::Span<const BlobToSave> blobs) {
  ASSIGN_OR_RETURN(PendingCommit check, gate_->PrepareCommit(job_id, worker_id, step, false));
  RETURN_IF_ERROR(RequireRankZero(check, worker_id, step));
  RETURN_IF_ERROR(CheckLayoutOf(job_id, LayoutOf(tensors, blobs), step));
  ASSIGN_OR_RETURN(PendingCommit pending, gate_->PrepareCommit(job_id, worker_id, step, true));
  const Record ledger{LedgerRecordKey(job_id), pending.snapshot.SerializeAsString()};
  const absl::Status stored =
      store_->Save(job_id, step, tensors, blobs, absl::MakeConstSpan(&ledger, 1));
  return gate_->FinishCommit(job_id, pending, stored);
}

absl::Status Uploads::CheckLayoutOf(absl::string_view job_id, const Layout& layout, uint64_t step) {
  std::optional<Layout> committed;
  absl::StatusOr<std::unique_ptr<CheckpointReader>> latest = store_->OpenLatest(job_id);
  if (latest.ok()) {
    committed = LayoutOf((*latest)->info());
  } else if (latest.status().code() != absl::StatusCode::kNotFound) {
    return latest.status();
  }
  return CheckLayout(layout, committed, step);
}

absl::StatusOr<std::unique_ptr<CheckpointWriter>> Uploads::Begin(absl::string_view job_id,
                                                                 absl::string_view worker_id,
                                                                 uint64_t step) {
  ASSIGN_OR_RETURN(PendingCommit check, gate_->PrepareCommit(job_id, worker_id, step, false));
  RETURN_IF_ERROR(RequireRankZero(check, worker_id, step));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> inner, store_->BeginSave(job_id, step));
  return std::make_unique<LedgerCommittingWriter>(
      this, gate_, std::string(job_id), std::string(worker_id), step, max_bytes_, std::move(inner));
}

absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> Uploads::BeginPart(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
    uint32_t parts) {
  ASSIGN_OR_RETURN(PendingCommit check, gate_->PrepareCommit(job_id, worker_id, step, false));
  if (parts != check.world_size || part != check.rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint part ", part, " of ", parts, ": worker ", worker_id, " is rank ",
                     check.rank, " of ", check.world_size, " in generation ", check.generation));
  }
  const std::string path =
      absl::StrCat(spool_dir_, "/", job_id, ".", step, ".", part, ".", spool_counter_.fetch_add(1));
  ASSIGN_OR_RETURN(std::unique_ptr<SpooledPart> spooled, SpooledPart::Create(path));
  return std::make_unique<PartUploadWriter>(this, std::string(job_id), std::string(worker_id), step,
                                            part, parts, max_bytes_, std::move(spooled));
}

absl::StatusOr<bool> Uploads::HandInPart(const std::string& job_id, const std::string& worker_id,
                                         uint64_t step, uint32_t part, uint32_t parts,
                                         std::unique_ptr<SpooledPart> spooled) {
  ASSIGN_OR_RETURN(PendingCommit check, gate_->PrepareCommit(job_id, worker_id, step, false));
  if (parts != check.world_size || part != check.rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint part ", part, " of ", parts, ": the group changed; worker ",
                     worker_id, " is now rank ", check.rank, " of ", check.world_size));
  }
  std::vector<std::unique_ptr<SpooledPart>> all;
  {
    absl::MutexLock lock(&mu_);
    PartSet& set = part_sets_[job_id];
    if (set.step != step || set.generation != check.generation || set.parts.size() != parts) {
      set = PartSet{step, check.generation, {}};
      set.parts.resize(parts);
    }
    set.parts[part] = std::move(spooled);
    for (const auto& p : set.parts) {
      if (p == nullptr) return false;  // the others are still on their way
    }
    all = std::move(set.parts);
    part_sets_.erase(job_id);
  }
  std::vector<const SpooledPart*> views;
  uint64_t total = 0;
  for (const auto& p : all) {
    views.push_back(p.get());
    total += p->bytes();
  }
  if (total > max_bytes_) {
    return UploadBudget::Exceeded(max_bytes_, step);  // the set is dropped
  }

  const absl::Status committed = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Layout layout, LayoutOfParts(views));
    RETURN_IF_ERROR(CheckLayoutOf(job_id, layout, step));
    ASSIGN_OR_RETURN(PendingCommit pending, gate_->PrepareCommit(job_id, worker_id, step, true));
    const absl::Status stored = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> writer, store_->BeginSave(job_id, step));
      RETURN_IF_ERROR(JoinParts(views, writer.get()));
      const Record ledger{LedgerRecordKey(job_id), pending.snapshot.SerializeAsString()};
      return writer->Commit(absl::MakeConstSpan(&ledger, 1));
    }();
    return gate_->FinishCommit(job_id, pending, stored);
  }();
  if (!committed.ok() && committed.code() != absl::StatusCode::kInvalidArgument) {
    // Not the parts' fault (another commit was running, say): keep the
    // others, so that this part sent again completes the set.
    absl::MutexLock lock(&mu_);
    PartSet& set = part_sets_[job_id];
    if (set.parts.empty()) {
      all[part].reset();
      set = PartSet{step, check.generation, std::move(all)};
    }
  }
  RETURN_IF_ERROR(committed);
  return true;
}

}  // namespace potluck::coordinator_internal
