// The save path: a data file written straight from the caller's buffers,
// then the manifest committed in RocksDB (see checkpoint_store.h).
#include <algorithm>
#include <future>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

#include "checkpoint/internal/store_parts.h"
#include "common/checksum.h"

namespace potluck::checkpoint_internal {

namespace {

constexpr size_t kMaxNameBytes = 1024;

// Writes the data file straight from the caller's buffers (whole chunks are
// never staged), then commits the manifest in RocksDB.
class WriterImpl final : public CheckpointWriter {
 public:
  WriterImpl(Database* db, std::string job_id, uint64_t step,
             std::unique_ptr<rocksdb::FSWritableFile> file)
      : db_(db),
        job_id_(std::move(job_id)),
        step_(step),
        where_(Where(job_id_, step)),
        path_(db->DataPath(job_id_, step)),
        file_(std::move(file)) {
    manifest_.set_format_version(kFormatVersion);
    manifest_.set_job_id(job_id_);
    manifest_.set_step(step_);
    manifest_.set_data_file_bytes(kDataHeaderBytes);
  }

  ~WriterImpl() override {
    if (!committed_) {
      // Best effort: Open removes the file if this fails or never runs.
      if (file_ != nullptr) file_->Close(rocksdb::IOOptions(), nullptr).PermitUncheckedError();
      db_->fs()->DeleteFile(path_, rocksdb::IOOptions(), nullptr).PermitUncheckedError();
    }
    db_->ReleaseWriter();
  }

  absl::Status WriteHeader() { return Remember(FileWrite(DataFileHeader(step_))); }

  absl::Status BeginEntry(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape) override {
    RETURN_IF_ERROR(CheckUsable());
    RETURN_IF_ERROR(CheckEntryComplete());
    if (name.empty() || name.size() > kMaxNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": entry names must be 1 to ", kMaxNameBytes, " bytes"));
    }
    if (!names_.insert(std::string(name)).second) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": duplicate entry '", name, "'"));
    }
    uint64_t count = 1;
    for (int64_t dim : shape) {
      if (dim < 0 || (dim > 0 && count > kMaxEntryBytes / static_cast<uint64_t>(dim))) {
        return absl::InvalidArgumentError(
            absl::StrCat(where_, ": entry '", name, "' has an invalid shape"));
      }
      count *= static_cast<uint64_t>(dim);
    }
    const uint64_t size_bytes = count * DTypeSize(dtype);
    if (size_bytes > kMaxEntryBytes) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": entry '", name, "' is too large"));
    }
    current_ = manifest_.add_entries();
    current_->set_name(std::string(name));
    current_->set_kind(kind == EntryKind::kBlob ? v1::ENTRY_KIND_BLOB : v1::ENTRY_KIND_TENSOR);
    current_->set_dtype(static_cast<uint32_t>(dtype));
    for (int64_t dim : shape) current_->add_shape(dim);
    current_->set_size_bytes(size_bytes);
    current_->set_chunk_bytes(db_->options().chunk_bytes);
    current_->set_data_offset(manifest_.data_file_bytes());
    manifest_.set_total_bytes(manifest_.total_bytes() + size_bytes);
    manifest_.set_data_file_bytes(manifest_.data_file_bytes() + size_bytes);
    written_ = 0;
    chunk_.clear();
    return absl::OkStatus();
  }

  absl::Status Append(const void* data, size_t size_bytes) override {
    RETURN_IF_ERROR(CheckUsable());
    if (current_ == nullptr || size_bytes > current_->size_bytes() - written_) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": ", size_bytes, " bytes appended past the end of ",
                       current_ == nullptr ? std::string("no entry")
                                           : absl::StrCat("'", current_->name(), "'")));
    }
    const char* bytes = static_cast<const char*>(data);
    if (chunk_.empty()) {
      const size_t whole = WholeChunkBytes(size_bytes);
      if (whole > 0) {
        RETURN_IF_ERROR(Remember(WriteWholeChunks(bytes, whole)));
        written_ += whole;
        bytes += whole;
        size_bytes -= whole;
      }
    }
    while (size_bytes > 0) {  // a partial chunk: staged until it is whole
      const size_t take = std::min<size_t>(size_bytes, CurrentChunkBytes() - chunk_.size());
      chunk_.append(bytes, take);
      written_ += take;
      bytes += take;
      size_bytes -= take;
      if (chunk_.size() == CurrentChunkBytes()) {
        current_->add_chunk_checksums(Checksum64(chunk_));
        RETURN_IF_ERROR(Remember(FileWrite(chunk_)));
        chunk_.clear();
      }
    }
    return absl::OkStatus();
  }

  absl::Status Commit(absl::Span<const Record> records) override {
    RETURN_IF_ERROR(CheckUsable());
    RETURN_IF_ERROR(CheckEntryComplete());
    // The data file is durable (contents and directory entry) before the
    // manifest that points at it is written.
    RETURN_IF_ERROR(Remember(FromRocksDb(file_->Sync(rocksdb::IOOptions(), nullptr),
                                         absl::StrCat(where_, ": syncing ", path_))));
    RETURN_IF_ERROR(Remember(FromRocksDb(file_->Close(rocksdb::IOOptions(), nullptr),
                                         absl::StrCat(where_, ": closing ", path_))));
    file_.reset();
    RETURN_IF_ERROR(Remember(db_->SyncDir(db_->JobDataDir(job_id_))));
    manifest_.set_created_unix_micros(absl::ToUnixMicros(absl::Now()));
    rocksdb::WriteBatch commit;
    commit.Put(ManifestKey(job_id_, step_), EncodeManifest(manifest_));
    for (const Record& record : records) {
      if (record.value.has_value()) {
        commit.Put(RecordKey(record.key), *record.value);
      } else {
        commit.Delete(RecordKey(record.key));
      }
    }
    RETURN_IF_ERROR(
        Remember(db_->Write(&commit, /*sync=*/true, absl::StrCat(where_, ": committing"))));
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  absl::Status CheckUsable() const {
    if (committed_) {
      return absl::FailedPreconditionError(absl::StrCat(where_, ": already committed"));
    }
    return failed_;
  }

  absl::Status CheckEntryComplete() const {
    if (current_ != nullptr && written_ < current_->size_bytes()) {
      return absl::FailedPreconditionError(
          absl::StrCat(where_, ": entry '", current_->name(), "' is missing ",
                       current_->size_bytes() - written_, " bytes"));
    }
    return absl::OkStatus();
  }

  // A writer that failed once stays failed: its file may be half written.
  absl::Status Remember(absl::Status status) {
    if (!status.ok() && failed_.ok()) failed_ = status;
    return status;
  }

  // The size of the chunk being filled: chunk_bytes, or less at the entry's end.
  uint64_t CurrentChunkBytes() const {
    const uint64_t chunk_start = written_ - chunk_.size();
    return std::min<uint64_t>(current_->chunk_bytes(), current_->size_bytes() - chunk_start);
  }

  // How many of the next `available` bytes, from a chunk boundary, make whole chunks.
  size_t WholeChunkBytes(size_t available) const {
    const uint64_t chunk_bytes = current_->chunk_bytes();
    const uint64_t left_in_entry = current_->size_bytes() - written_;
    if (available >= left_in_entry) return left_in_entry;  // the last chunk may be short
    return available / chunk_bytes * chunk_bytes;
  }

  // Writes whole chunks straight from the caller's buffer. Their checksums
  // are computed on a second thread meanwhile, so on a machine with a spare
  // core hashing adds no time to the save.
  absl::Status WriteWholeChunks(const char* bytes, size_t size_bytes) {
    const uint64_t chunk_bytes = current_->chunk_bytes();
    const size_t chunks = static_cast<size_t>((size_bytes + chunk_bytes - 1) / chunk_bytes);
    std::vector<uint64_t> checksums(chunks);
    auto hash = [&checksums, bytes, size_bytes, chunk_bytes] {
      for (size_t i = 0; i < checksums.size(); ++i) {
        const uint64_t offset = i * chunk_bytes;
        checksums[i] =
            Checksum64(bytes + offset, std::min<uint64_t>(chunk_bytes, size_bytes - offset));
      }
    };
    std::future<void> hashing;
    if (chunks > 1) {
      hashing = std::async(std::launch::async, hash);
    } else {
      hash();
    }
    const absl::Status written = FileWrite(absl::string_view(bytes, size_bytes));
    if (hashing.valid()) hashing.wait();
    for (uint64_t checksum : checksums) current_->add_chunk_checksums(checksum);
    return written;
  }

  absl::Status FileWrite(absl::string_view bytes) {
    return FromRocksDb(
        file_->Append(rocksdb::Slice(bytes.data(), bytes.size()), rocksdb::IOOptions(), nullptr),
        absl::StrCat(where_, ": writing ", path_));
  }

  Database* const db_;  // not owned; the store outlives its writers
  const std::string job_id_;
  const uint64_t step_;
  const std::string where_;
  const std::string path_;
  std::unique_ptr<rocksdb::FSWritableFile> file_;  // null once committed
  v1::CheckpointManifest manifest_;
  v1::ManifestEntry* current_ = nullptr;  // points into manifest_
  uint64_t written_ = 0;                  // bytes of current_ received so far
  std::string chunk_;                     // a partial chunk, staged
  absl::flat_hash_set<std::string> names_;
  bool committed_ = false;
  absl::Status failed_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginWriter(Database* db,
                                                              absl::string_view job_id,
                                                              uint64_t step) {
  const std::string where = Where(job_id, step);
  rocksdb::PinnableSlice existing;
  const absl::Status found = db->Get(nullptr, ManifestKey(job_id, step), &existing, where);
  if (found.ok()) return absl::AlreadyExistsError(absl::StrCat(where, " already exists"));
  if (!absl::IsNotFound(found)) return found;
  if (!db->AcquireWriter()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", where, ": another save is in progress"));
  }
  const std::string job_dir = db->JobDataDir(job_id);
  rocksdb::IOStatus io = db->fs()->CreateDirIfMissing(job_dir.substr(0, job_dir.rfind('/')),
                                                      rocksdb::IOOptions(), nullptr);
  if (io.ok()) io = db->fs()->CreateDirIfMissing(job_dir, rocksdb::IOOptions(), nullptr);
  // Creating the file truncates whatever an interrupted attempt at this step left.
  std::unique_ptr<rocksdb::FSWritableFile> file;
  if (io.ok()) {
    io = db->fs()->NewWritableFile(db->DataPath(job_id, step), rocksdb::FileOptions(), &file,
                                   nullptr);
  }
  if (!io.ok()) {
    db->ReleaseWriter();
    return FromRocksDb(io, absl::StrCat(where, ": creating its data file"));
  }
  auto writer = std::make_unique<WriterImpl>(db, std::string(job_id), step, std::move(file));
  RETURN_IF_ERROR(writer->WriteHeader());
  return std::unique_ptr<CheckpointWriter>(std::move(writer));
}

}  // namespace potluck::checkpoint_internal
