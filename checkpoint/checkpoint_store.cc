#include "checkpoint/checkpoint_store.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"

#include "checkpoint/internal/store_parts.h"

namespace potluck {

using checkpoint_internal::Database;
using checkpoint_internal::Where;
namespace ci = checkpoint_internal;

namespace {

// Deletes a checkpoint: the manifest first (durably), so no reader can find a
// checkpoint whose file is going; then the file. A crash in between leaves a
// file without a manifest, which the next Open removes.
absl::Status DeleteStep(Database* db, absl::string_view job_id, uint64_t step) {
  rocksdb::WriteBatch batch;
  batch.Delete(ci::ManifestKey(job_id, step));
  RETURN_IF_ERROR(db->Write(&batch, /*sync=*/true, absl::StrCat("deleting ", Where(job_id, step))));
  const rocksdb::IOStatus deleted =
      db->fs()->DeleteFile(db->DataPath(job_id, step), rocksdb::IOOptions(), nullptr);
  if (!deleted.ok() && !deleted.IsNotFound()) {
    return FromRocksDb(deleted, absl::StrCat("deleting the data of ", Where(job_id, step)));
  }
  return absl::OkStatus();
}

// Removes the data files of saves that a crash interrupted (no manifest was
// ever committed for them, so no reader saw them) and of deletions that a
// crash cut short.
absl::Status RemoveUncommittedData(Database* db, const std::string& data_root) {
  std::vector<std::string> jobs;
  const rocksdb::IOStatus listed =
      db->fs()->GetChildren(data_root, rocksdb::IOOptions(), &jobs, nullptr);
  if (listed.IsNotFound()) return absl::OkStatus();
  RETURN_IF_ERROR(FromRocksDb(listed, absl::StrCat("listing ", data_root)));
  for (const std::string& job : jobs) {
    if (!ValidateJobId(job).ok()) continue;
    const std::string job_dir = db->JobDataDir(job);
    std::vector<std::string> files;
    if (!db->fs()->GetChildren(job_dir, rocksdb::IOOptions(), &files, nullptr).ok()) continue;
    for (const std::string& file : files) {
      uint64_t step = 0;
      if (!ci::ParseDataFileName(file, &step)) continue;
      rocksdb::PinnableSlice manifest;
      const absl::Status found = db->Get(nullptr, ci::ManifestKey(job, step), &manifest, job_dir);
      if (!absl::IsNotFound(found)) {
        RETURN_IF_ERROR(found);
        continue;
      }
      RETURN_IF_ERROR(FromRocksDb(
          db->fs()->DeleteFile(absl::StrCat(job_dir, "/", file), rocksdb::IOOptions(), nullptr),
          absl::StrCat("removing uncommitted ", job_dir, "/", file)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const EntryInfo* CheckpointInfo::Find(absl::string_view name) const {
  for (const EntryInfo& entry : entries) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

absl::Status ValidateJobId(absl::string_view job_id) {
  const auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  };
  if (job_id.empty() || job_id.size() > 64 || !std::all_of(job_id.begin(), job_id.end(), allowed) ||
      job_id[0] == '.' || job_id[0] == '_' || job_id[0] == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid job id '", job_id,
                     "': use 1-64 characters from a-z 0-9 . _ -, starting with a "
                     "letter or digit"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(
    const std::string& dir, const CheckpointOptions& options) {
  if (options.chunk_bytes == 0) {
    return absl::InvalidArgumentError("CheckpointOptions.chunk_bytes must be positive");
  }
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.paranoid_checks = true;
  // A log record that fails its checksum is damage, not a save cut short:
  // the default (point in time) would open without every commit after it.
  // Only an incomplete last record (a write the crash cut) is dropped.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 2;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  if (options.env != nullptr) db_options.env = options.env;

  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::Open(db_options, dir, &raw);
  RETURN_IF_ERROR(FromRocksDbOpen(opened, dir, absl::StrCat("opening checkpoint store ", dir)));
  auto db = std::make_unique<Database>(std::unique_ptr<rocksdb::DB>(raw), dir, options,
                                       db_options.env->GetFileSystem());

  rocksdb::PinnableSlice format;
  const absl::Status found = db->Get(nullptr, ci::kFormatKey, &format, dir);
  if (absl::IsNotFound(found)) {
    std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    if (it->Valid()) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " holds a RocksDB database that is not a potluck checkpoint store"));
    }
    rocksdb::WriteBatch batch;
    batch.Put(ci::kFormatKey, ci::kFormatValue);
    RETURN_IF_ERROR(db->Write(&batch, /*sync=*/true, "writing the format marker"));
  } else if (!found.ok()) {
    return found;
  } else if (format.ToString() != ci::kFormatValue) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": unsupported checkpoint format '",
                                                      format.ToString(), "' (this build reads '",
                                                      ci::kFormatValue, "')"));
  }
  RETURN_IF_ERROR(RemoveUncommittedData(db.get(), absl::StrCat(dir, "/", ci::kDataDir)));
  return std::unique_ptr<CheckpointStore>(new CheckpointStore(std::move(db)));
}

CheckpointStore::CheckpointStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}

CheckpointStore::~CheckpointStore() {
  if (db_ != nullptr) db_->db()->Close().PermitUncheckedError();
}

absl::StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointStore::BeginSave(
    absl::string_view job_id, uint64_t step) {
  RETURN_IF_ERROR(ValidateJobId(job_id));
  return ci::BeginWriter(db_.get(), job_id, step);
}

absl::Status CheckpointStore::Save(absl::string_view job_id, uint64_t step,
                                   absl::Span<const TensorToSave> tensors,
                                   absl::Span<const BlobToSave> blobs,
                                   absl::Span<const Record> records) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> writer, BeginSave(job_id, step));
  for (const TensorToSave& tensor : tensors) {
    if (!tensor.data.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' is on ",
                                                     tensor.data.device().ToString(),
                                                     ": copy it to host memory first"));
    }
    std::vector<int64_t> shape = tensor.shape;
    if (shape.empty() && tensor.data.count() != 1) {
      shape.push_back(static_cast<int64_t>(tensor.data.count()));
    }
    uint64_t count = 1;
    for (int64_t dim : shape) count *= static_cast<uint64_t>(std::max<int64_t>(dim, 0));
    if (count != tensor.data.count()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "': shape holds ",
                                                     count, " elements, the data ",
                                                     tensor.data.count()));
    }
    RETURN_IF_ERROR(
        writer->BeginEntry(tensor.name, EntryKind::kTensor, tensor.data.dtype(), std::move(shape)));
    RETURN_IF_ERROR(writer->Append(tensor.data.data(), tensor.data.size_bytes()));
  }
  for (const BlobToSave& blob : blobs) {
    RETURN_IF_ERROR(writer->BeginEntry(blob.name, EntryKind::kBlob, DType::kUInt8,
                                       {static_cast<int64_t>(blob.bytes.size())}));
    RETURN_IF_ERROR(writer->Append(blob.bytes.data(), blob.bytes.size()));
  }
  return writer->Commit(records);
}

absl::StatusOr<std::vector<std::string>> CheckpointStore::ListJobs() {
  std::set<std::string> jobs;
  RETURN_IF_ERROR(db_->Scan(ci::kManifestRoot, [&jobs](absl::string_view key, absl::string_view) {
    std::string job_id;
    uint64_t step = 0;
    if (ci::ParseJobStepKey(key, ci::kManifestRoot, &job_id, &step)) jobs.insert(job_id);
    return absl::OkStatus();
  }));
  return std::vector<std::string>(jobs.begin(), jobs.end());
}

absl::StatusOr<std::vector<uint64_t>> CheckpointStore::ListSteps(absl::string_view job_id) {
  RETURN_IF_ERROR(ValidateJobId(job_id));
  std::vector<uint64_t> steps;
  RETURN_IF_ERROR(db_->Scan(ci::ManifestPrefix(job_id), [&](absl::string_view key,
                                                            absl::string_view) {
    std::string parsed_job;
    uint64_t step = 0;
    if (ci::ParseJobStepKey(key, ci::kManifestRoot, &parsed_job, &step) && parsed_job == job_id) {
      steps.push_back(step);
    }
    return absl::OkStatus();
  }));
  return steps;  // keys sort by zero-padded step
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointStore::OpenCheckpoint(
    absl::string_view job_id, uint64_t step) {
  RETURN_IF_ERROR(ValidateJobId(job_id));
  return ci::OpenReader(db_.get(), job_id, step);
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointStore::OpenLatest(
    absl::string_view job_id) {
  ASSIGN_OR_RETURN(const std::vector<uint64_t> steps, ListSteps(job_id));
  if (steps.empty()) {
    return absl::NotFoundError(absl::StrCat("job ", job_id, " has no checkpoint"));
  }
  return OpenCheckpoint(job_id, steps.back());
}

absl::Status CheckpointStore::Delete(absl::string_view job_id, uint64_t step) {
  RETURN_IF_ERROR(ValidateJobId(job_id));
  return DeleteStep(db_.get(), job_id, step);
}

absl::StatusOr<std::vector<uint64_t>> CheckpointStore::ApplyRetention(
    absl::string_view job_id, const RetentionPolicy& policy) {
  if (policy.keep_last < 1) {
    return absl::InvalidArgumentError("retention must keep at least the newest checkpoint");
  }
  ASSIGN_OR_RETURN(const std::vector<uint64_t> steps, ListSteps(job_id));
  std::vector<uint64_t> deleted;
  for (size_t i = 0; i + policy.keep_last < steps.size(); ++i) {
    const uint64_t step = steps[i];
    if (policy.keep_every > 0 && step % policy.keep_every == 0) continue;
    RETURN_IF_ERROR(DeleteStep(db_.get(), job_id, step));
    deleted.push_back(step);
  }
  return deleted;
}

absl::StatusOr<std::optional<std::string>> CheckpointStore::GetRecord(absl::string_view key) {
  rocksdb::PinnableSlice value;
  const absl::Status status =
      db_->Get(nullptr, ci::RecordKey(key), &value, absl::StrCat("reading record ", key));
  if (absl::IsNotFound(status)) return std::optional<std::string>();
  RETURN_IF_ERROR(status);
  return std::optional<std::string>(value.ToString());
}

}  // namespace potluck
