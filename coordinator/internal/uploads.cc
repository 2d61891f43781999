#include "coordinator/internal/uploads.h"

#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "common/status.h"
#include "coordinator/internal/state_db.h"

namespace potluck::coordinator_internal {
namespace {

// Counts an upload's bytes and entry metadata against
// CoordinatorOptions.max_checkpoint_bytes; once over, the upload stays
// refused.
class UploadBudget {
 public:
  UploadBudget(uint64_t max_bytes, uint64_t step) : max_bytes_(max_bytes), step_(step) {}
  absl::Status Take(uint64_t bytes) {
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

// kPermissionDenied unless `check`'s worker is rank 0 of its generation:
// only it uploads a whole checkpoint (members upload parts).
absl::Status RequireRankZero(const PendingCommit& check, absl::string_view worker_id,
                             uint64_t step) {
  if (check.rank == 0) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "worker ", worker_id, " is rank ", check.rank, " of generation ", check.generation,
      ": a whole checkpoint (step ", step, ") comes from rank 0; members upload parts"));
}

// What a streamed upload's writers share: the spooled file, the budget,
// and the member's open-upload mark, given back when the writer goes.
class StreamedUpload {
 public:
  StreamedUpload(Uploads* uploads, std::string job_id, std::string worker_id, uint64_t step,
                 uint64_t max_bytes, std::unique_ptr<SpooledPart> spooled)
      : uploads_(uploads),
        job_id_(std::move(job_id)),
        worker_id_(std::move(worker_id)),
        step_(step),
        budget_(max_bytes, step),
        spooled_(std::move(spooled)) {}
  ~StreamedUpload() { uploads_->EndUpload(job_id_, worker_id_); }

  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count) {
    RETURN_IF_ERROR(Usable());
    RETURN_IF_ERROR(budget_.Take(SliceMetadataBytes(name, shape)));
    return spooled_->BeginSlice(name, kind, dtype, std::move(shape), offset, count);
  }
  absl::Status Append(const void* data, size_t size_bytes) {
    RETURN_IF_ERROR(Usable());
    RETURN_IF_ERROR(budget_.Take(size_bytes));
    return spooled_->Append(data, size_bytes);
  }
  // The spooled upload, complete, for its commit (once).
  absl::StatusOr<std::unique_ptr<SpooledPart>> Close() {
    RETURN_IF_ERROR(Usable());
    RETURN_IF_ERROR(budget_.status());
    RETURN_IF_ERROR(spooled_->Close());
    return std::move(spooled_);
  }

  Uploads* uploads() const { return uploads_; }
  const std::string& job_id() const { return job_id_; }
  const std::string& worker_id() const { return worker_id_; }
  uint64_t step() const { return step_; }

 private:
  absl::Status Usable() const {
    if (spooled_ != nullptr) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("the upload of step ", step_, " was handed in already"));
  }

  Uploads* const uploads_;  // not owned; outlives the writer (the store's rule)
  const std::string job_id_;
  const std::string worker_id_;
  const uint64_t step_;
  UploadBudget budget_;
  std::unique_ptr<SpooledPart> spooled_;
};

// A whole checkpoint streamed by rank 0: each entry one slice of the spool.
class WholeUploadWriter final : public CheckpointWriter {
 public:
  explicit WholeUploadWriter(std::unique_ptr<StreamedUpload> upload) : upload_(std::move(upload)) {}

  absl::Status BeginEntry(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape) override {
    uint64_t elements = 1;
    for (const int64_t dim : shape) {
      if (dim < 0) break;  // BeginSlice names it
      elements *= static_cast<uint64_t>(dim);
    }
    return upload_->BeginSlice(name, kind, dtype, std::move(shape), 0, elements);
  }
  absl::Status Append(const void* data, size_t size_bytes) override {
    return upload_->Append(data, size_bytes);
  }
  absl::Status Commit(absl::Span<const Record> records) override {
    for (const Record& record : records) {
      if (absl::StartsWith(record.key, "coordinator/")) {
        return absl::InvalidArgumentError(
            absl::StrCat("record key ", record.key, " is reserved for the coordinator"));
      }
    }
    ASSIGN_OR_RETURN(std::unique_ptr<SpooledPart> spooled, upload_->Close());
    return upload_->uploads()->CommitWhole(upload_->job_id(), upload_->worker_id(), upload_->step(),
                                           std::move(spooled), records);
  }

 private:
  std::unique_ptr<StreamedUpload> upload_;
};

// A part of a split upload, handed to the coordinator at Finish.
class PartUploadWriter final : public CheckpointPartWriter {
 public:
  PartUploadWriter(std::unique_ptr<StreamedUpload> upload, uint32_t part, uint32_t parts)
      : upload_(std::move(upload)), part_(part), parts_(parts) {}

  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count) override {
    return upload_->BeginSlice(name, kind, dtype, std::move(shape), offset, count);
  }
  absl::Status Append(const void* data, size_t size_bytes) override {
    return upload_->Append(data, size_bytes);
  }
  absl::StatusOr<bool> Finish() override {
    ASSIGN_OR_RETURN(std::unique_ptr<SpooledPart> spooled, upload_->Close());
    return upload_->uploads()->HandInPart(upload_->job_id(), upload_->worker_id(), upload_->step(),
                                          part_, parts_, std::move(spooled));
  }

 private:
  std::unique_ptr<StreamedUpload> upload_;
  const uint32_t part_;
  const uint32_t parts_;
};

}  // namespace

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

absl::StatusOr<std::unique_ptr<SpooledPart>> Uploads::StartUpload(absl::string_view job_id,
                                                                  absl::string_view worker_id,
                                                                  uint64_t step, uint32_t part) {
  {
    absl::MutexLock lock(&mu_);
    if (!open_uploads_.emplace(std::string(job_id), std::string(worker_id)).second) {
      return absl::ResourceExhaustedError(
          absl::StrCat("worker ", worker_id, " already has a checkpoint upload open for job ",
                       job_id, ": one at a time"));
    }
  }
  const std::string path =
      absl::StrCat(spool_dir_, "/", job_id, ".", step, ".", part, ".", spool_counter_.fetch_add(1));
  absl::StatusOr<std::unique_ptr<SpooledPart>> spooled = SpooledPart::Create(path, &quota_);
  if (!spooled.ok()) EndUpload(std::string(job_id), std::string(worker_id));
  return spooled;
}

void Uploads::EndUpload(const std::string& job_id, const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  open_uploads_.erase({job_id, worker_id});
}

absl::StatusOr<std::unique_ptr<CheckpointWriter>> Uploads::Begin(absl::string_view job_id,
                                                                 absl::string_view worker_id,
                                                                 uint64_t step) {
  ASSIGN_OR_RETURN(PendingCommit check, gate_->PrepareCommit(job_id, worker_id, step, false));
  RETURN_IF_ERROR(RequireRankZero(check, worker_id, step));
  ASSIGN_OR_RETURN(std::unique_ptr<SpooledPart> spooled,
                   StartUpload(job_id, worker_id, step, /*part=*/0));
  return std::make_unique<WholeUploadWriter>(std::make_unique<StreamedUpload>(
      this, std::string(job_id), std::string(worker_id), step, max_bytes_, std::move(spooled)));
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
  {
    // Refused before any byte flows: a member sending its part again (a
    // retry, an older worker) would replace what is in with the same bytes.
    absl::MutexLock lock(&mu_);
    const auto it = part_sets_.find(job_id);
    if (it != part_sets_.end() && it->second.step == step &&
        it->second.generation == check.generation && it->second.parts.size() == parts &&
        it->second.parts[part] != nullptr) {
      return absl::AlreadyExistsError(absl::StrCat("checkpoint part ", part, " of step ", step,
                                                   " is in already; the others are awaited"));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SpooledPart> spooled,
                   StartUpload(job_id, worker_id, step, part));
  return std::make_unique<PartUploadWriter>(
      std::make_unique<StreamedUpload>(this, std::string(job_id), std::string(worker_id), step,
                                       max_bytes_, std::move(spooled)),
      part, parts);
}

absl::Status Uploads::StoreJoined(const std::string& job_id, const std::string& worker_id,
                                  uint64_t step, absl::Span<const SpooledPart* const> parts,
                                  absl::Span<const Record> records) {
  ASSIGN_OR_RETURN(Layout layout, LayoutOfParts(parts));
  RETURN_IF_ERROR(CheckLayoutOf(job_id, layout, step));
  ASSIGN_OR_RETURN(PendingCommit pending, gate_->PrepareCommit(job_id, worker_id, step, true));
  const absl::Status stored = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> writer, store_->BeginSave(job_id, step));
    RETURN_IF_ERROR(JoinParts(parts, writer.get()));
    std::vector<Record> all(records.begin(), records.end());
    all.push_back({LedgerRecordKey(job_id), pending.snapshot.SerializeAsString()});
    return writer->Commit(all);
  }();
  return gate_->FinishCommit(job_id, pending, stored);
}

absl::Status Uploads::CommitWhole(const std::string& job_id, const std::string& worker_id,
                                  uint64_t step, std::unique_ptr<SpooledPart> spooled,
                                  absl::Span<const Record> records) {
  // Still rank 0 now that the bytes are in.
  ASSIGN_OR_RETURN(PendingCommit check, gate_->PrepareCommit(job_id, worker_id, step, false));
  RETURN_IF_ERROR(RequireRankZero(check, worker_id, step));
  const SpooledPart* parts[] = {spooled.get()};
  return StoreJoined(job_id, worker_id, step, parts, records);
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
    total += p->charged();
  }
  if (total > max_bytes_) {
    return UploadBudget::Exceeded(max_bytes_, step);  // the set is dropped
  }

  const absl::Status committed = StoreJoined(job_id, worker_id, step, views, {});
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
