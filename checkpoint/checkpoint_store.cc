#include "checkpoint/checkpoint_store.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "checkpoint/internal/format.h"
#include "common/checksum.h"
#include "common/status.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace potluck {

namespace checkpoint_internal {

// The RocksDB instance and the one-writer-at-a-time slot.
class Database {
 public:
  Database(std::unique_ptr<rocksdb::DB> db, std::string dir, CheckpointOptions options)
      : db_(std::move(db)), dir_(std::move(dir)), options_(options) {}

  rocksdb::DB* db() { return db_.get(); }
  const std::string& dir() const { return dir_; }
  const CheckpointOptions& options() const { return options_; }

  bool AcquireWriter() { return !writer_active_.exchange(true); }
  void ReleaseWriter() { writer_active_ = false; }

  absl::Status Write(rocksdb::WriteBatch* batch, bool sync, bool wal, absl::string_view context) {
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    write_options.disableWAL = !wal;
    return FromRocksDb(db_->Write(write_options, batch), context);
  }

  // Reads one key; kNotFound if absent.
  absl::Status Get(const rocksdb::Snapshot* snapshot, absl::string_view key,
                   rocksdb::PinnableSlice* value, bool fill_cache, absl::string_view context) {
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot;
    read_options.verify_checksums = true;
    read_options.fill_cache = fill_cache;
    return FromRocksDb(db_->Get(read_options, db_->DefaultColumnFamily(),
                                rocksdb::Slice(key.data(), key.size()), value),
                       context);
  }

  // Calls `visit(key, value)` for every key starting with `prefix`.
  template <typename Visit>
  absl::Status Scan(absl::string_view prefix, Visit visit) {
    rocksdb::ReadOptions read_options;
    read_options.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options));
    for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
      const absl::string_view key(it->key().data(), it->key().size());
      if (key.substr(0, prefix.size()) != prefix) break;
      RETURN_IF_ERROR(visit(key, absl::string_view(it->value().data(), it->value().size())));
    }
    return FromRocksDb(it->status(), absl::StrCat("scanning ", prefix));
  }

  // Compacts [begin, end) so the space of deleted chunks goes back to the disk.
  absl::Status Reclaim(const std::string& begin, const std::string& end) {
    rocksdb::CompactRangeOptions compact;
    compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    const rocksdb::Slice begin_slice(begin), end_slice(end);
    return FromRocksDb(db_->CompactRange(compact, &begin_slice, &end_slice), "reclaiming space");
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  const std::string dir_;
  const CheckpointOptions options_;
  std::atomic<bool> writer_active_{false};
};

}  // namespace checkpoint_internal

using checkpoint_internal::Database;
namespace ci = checkpoint_internal;

namespace {

constexpr uint64_t kMaxEntryBytes = uint64_t{1} << 50;
constexpr size_t kMaxNameBytes = 1024;
constexpr size_t kBatchBytes = 16 << 20;

std::string Where(absl::string_view job_id, uint64_t step) {
  return absl::StrCat("checkpoint ", job_id, "@", step);
}

EntryInfo ToEntryInfo(const v1::ManifestEntry& entry) {
  EntryInfo info;
  info.name = entry.name();
  info.kind = entry.kind() == v1::ENTRY_KIND_BLOB ? EntryKind::kBlob : EntryKind::kTensor;
  info.dtype = static_cast<DType>(entry.dtype());
  info.shape.assign(entry.shape().begin(), entry.shape().end());
  info.size_bytes = entry.size_bytes();
  info.chunk_bytes = entry.chunk_bytes();
  info.num_chunks = static_cast<uint32_t>(entry.chunk_checksums_size());
  return info;
}

// Checks that a manifest read from disk describes a consistent checkpoint
// before anything trusts its sizes.
absl::Status ValidateManifest(const v1::CheckpointManifest& manifest, absl::string_view where) {
  for (const v1::ManifestEntry& entry : manifest.entries()) {
    if (entry.dtype() > 255 || !IsValidDType(static_cast<uint8_t>(entry.dtype()))) {
      return absl::DataLossError(
          absl::StrCat(where, ": entry '", entry.name(), "' has invalid dtype ", entry.dtype()));
    }
    const uint64_t chunks = entry.chunk_checksums_size();
    const uint64_t chunk_bytes = entry.chunk_bytes();
    const bool chunks_fit =
        entry.size_bytes() == 0
            ? chunks == 0
            : chunk_bytes > 0 && chunks == (entry.size_bytes() + chunk_bytes - 1) / chunk_bytes;
    if (!chunks_fit || entry.size_bytes() > kMaxEntryBytes ||
        entry.size_bytes() % DTypeSize(static_cast<DType>(entry.dtype())) != 0) {
      return absl::DataLossError(
          absl::StrCat(where, ": entry '", entry.name(), "' has inconsistent sizes"));
    }
  }
  return absl::OkStatus();
}

class WriterImpl final : public CheckpointWriter {
 public:
  WriterImpl(Database* db, std::string job_id, uint64_t step)
      : db_(db), job_id_(std::move(job_id)), step_(step), where_(Where(job_id_, step)) {
    manifest_.set_format_version(ci::kFormatVersion);
    manifest_.set_job_id(job_id_);
    manifest_.set_step(step_);
  }

  ~WriterImpl() override {
    if (!committed_) {
      // Best effort: Open removes the leftovers if this fails or never runs.
      rocksdb::WriteBatch cleanup;
      cleanup.DeleteRange(ci::ChunkRangeBegin(job_id_, step_), ci::ChunkRangeEnd(job_id_, step_));
      cleanup.Delete(ci::PendingKey(job_id_, step_));
      db_->Write(&cleanup, /*sync=*/false, /*wal=*/true, where_).IgnoreError();
    }
    db_->ReleaseWriter();
  }

  absl::Status BeginEntry(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape) override {
    RETURN_IF_ERROR(CheckUsable());
    if (current_ != nullptr && written_ < current_->size_bytes()) {
      return absl::FailedPreconditionError(
          absl::StrCat(where_, ": entry '", current_->name(), "' is missing ",
                       current_->size_bytes() - written_, " bytes"));
    }
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
    manifest_.set_total_bytes(manifest_.total_bytes() + size_bytes);
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
    const uint32_t chunk_bytes = current_->chunk_bytes();
    while (size_bytes > 0) {
      const size_t take = std::min<size_t>(size_bytes, chunk_bytes - chunk_.size());
      chunk_.append(bytes, take);
      bytes += take;
      size_bytes -= take;
      written_ += take;
      if (chunk_.size() == chunk_bytes || written_ == current_->size_bytes()) {
        RETURN_IF_ERROR(Remember(EmitChunk()));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Commit(absl::Span<const Record> records) override {
    RETURN_IF_ERROR(CheckUsable());
    if (current_ != nullptr && written_ < current_->size_bytes()) {
      return absl::FailedPreconditionError(
          absl::StrCat(where_, ": entry '", current_->name(), "' is missing ",
                       current_->size_bytes() - written_, " bytes"));
    }
    RETURN_IF_ERROR(Remember(WriteChunks()));
    // Chunks were written without the WAL: flushing makes them durable before
    // the manifest that points at them.
    rocksdb::FlushOptions flush;
    flush.wait = true;
    RETURN_IF_ERROR(Remember(
        ci::FromRocksDb(db_->db()->Flush(flush), absl::StrCat(where_, ": flushing chunks"))));
    manifest_.set_created_unix_micros(absl::ToUnixMicros(absl::Now()));
    rocksdb::WriteBatch commit;
    commit.Put(ci::ManifestKey(job_id_, step_), ci::EncodeManifest(manifest_));
    commit.Delete(ci::PendingKey(job_id_, step_));
    for (const Record& record : records) {
      if (record.value.has_value()) {
        commit.Put(ci::RecordKey(record.key), *record.value);
      } else {
        commit.Delete(ci::RecordKey(record.key));
      }
    }
    RETURN_IF_ERROR(Remember(
        db_->Write(&commit, /*sync=*/true, /*wal=*/true, absl::StrCat(where_, ": committing"))));
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  absl::Status CheckUsable() const {
    if (committed_)
      return absl::FailedPreconditionError(absl::StrCat(where_, ": already committed"));
    if (!failed_.ok()) return failed_;
    return absl::OkStatus();
  }

  // A writer that failed once stays failed: its chunks may be half written.
  absl::Status Remember(absl::Status status) {
    if (!status.ok() && failed_.ok()) failed_ = status;
    return status;
  }

  absl::Status EmitChunk() {
    const uint32_t index = static_cast<uint32_t>(current_->chunk_checksums_size());
    current_->add_chunk_checksums(Checksum64(chunk_));
    batch_.Put(ci::ChunkKey(job_id_, step_, manifest_.entries_size() - 1, index), chunk_);
    batch_bytes_ += chunk_.size();
    chunk_.clear();
    if (batch_bytes_ >= kBatchBytes) return WriteChunks();
    return absl::OkStatus();
  }

  absl::Status WriteChunks() {
    if (batch_.Count() == 0) return absl::OkStatus();
    absl::Status status = db_->Write(&batch_, /*sync=*/false, /*wal=*/false,
                                     absl::StrCat(where_, ": writing chunks"));
    batch_.Clear();
    batch_bytes_ = 0;
    return status;
  }

  Database* const db_;  // not owned; the store outlives its writers
  const std::string job_id_;
  const uint64_t step_;
  const std::string where_;
  v1::CheckpointManifest manifest_;
  v1::ManifestEntry* current_ = nullptr;  // points into manifest_
  uint64_t written_ = 0;                  // bytes of current_ received so far
  std::string chunk_;
  rocksdb::WriteBatch batch_;
  size_t batch_bytes_ = 0;
  absl::flat_hash_set<std::string> names_;
  bool committed_ = false;
  absl::Status failed_;
};

class ReaderImpl final : public CheckpointReader {
 public:
  ReaderImpl(Database* db, const rocksdb::Snapshot* snapshot, CheckpointInfo info)
      : db_(db),
        snapshot_(snapshot),
        info_(std::move(info)),
        where_(Where(info_.job_id, info_.step)) {}
  ~ReaderImpl() override { db_->db()->ReleaseSnapshot(snapshot_); }

  const CheckpointInfo& info() const override { return info_; }

  absl::StatusOr<std::string> ReadChunk(absl::string_view name, uint32_t chunk) override {
    ASSIGN_OR_RETURN(const size_t entry, FindEntry(name));
    std::string out;
    RETURN_IF_ERROR(VisitChunk(
        entry, chunk, [&out](absl::string_view bytes) { out.assign(bytes.data(), bytes.size()); }));
    return out;
  }

  absl::Status ReadTensor(absl::string_view name, TensorView out) override {
    ASSIGN_OR_RETURN(const size_t entry, FindEntry(name));
    if (out.count() != info_.entries[entry].count()) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": '", name, "' has ",
                                                     info_.entries[entry].count(),
                                                     " elements, the buffer ", out.count()));
    }
    return ReadSlice(name, 0, out);
  }

  absl::Status ReadSlice(absl::string_view name, uint64_t offset, TensorView out) override {
    ASSIGN_OR_RETURN(const size_t index, FindEntry(name));
    const EntryInfo& entry = info_.entries[index];
    if (out.dtype() != entry.dtype || !out.device().is_cpu()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": '", name, "' is ", DTypeName(entry.dtype), ", read into a ",
                       DTypeName(out.dtype()), " ", out.device().ToString(), " buffer"));
    }
    if (offset > entry.count() || out.count() > entry.count() - offset) {
      return absl::OutOfRangeError(absl::StrCat(where_, ": elements [", offset, ", +", out.count(),
                                                ") are outside '", name, "' (", entry.count(),
                                                " elements)"));
    }
    const uint64_t element = DTypeSize(entry.dtype);
    uint64_t begin = offset * element;
    const uint64_t end = begin + out.size_bytes();
    char* dest = static_cast<char*>(out.data());
    while (begin < end) {
      const uint32_t chunk = static_cast<uint32_t>(begin / entry.chunk_bytes);
      const uint64_t chunk_start = uint64_t{chunk} * entry.chunk_bytes;
      uint64_t copied = 0;
      RETURN_IF_ERROR(VisitChunk(index, chunk, [&](absl::string_view bytes) {
        const uint64_t from = begin - chunk_start;
        copied = std::min<uint64_t>(bytes.size() - from, end - begin);
        std::memcpy(dest, bytes.data() + from, copied);
      }));
      dest += copied;
      begin += copied;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ReadBlob(absl::string_view name) override {
    ASSIGN_OR_RETURN(const size_t index, FindEntry(name));
    const EntryInfo& entry = info_.entries[index];
    std::string out;
    out.reserve(entry.size_bytes);
    for (uint32_t chunk = 0; chunk < entry.num_chunks; ++chunk) {
      RETURN_IF_ERROR(VisitChunk(index, chunk, [&out](absl::string_view bytes) {
        out.append(bytes.data(), bytes.size());
      }));
    }
    return out;
  }

  absl::Status Verify() override {
    for (size_t index = 0; index < info_.entries.size(); ++index) {
      for (uint32_t chunk = 0; chunk < info_.entries[index].num_chunks; ++chunk) {
        RETURN_IF_ERROR(VisitChunk(index, chunk, [](absl::string_view) {}));
      }
    }
    return absl::OkStatus();
  }

  // The manifest's checksums, kept beside info_ for verification.
  std::vector<std::vector<uint64_t>> checksums;

 private:
  absl::StatusOr<size_t> FindEntry(absl::string_view name) const {
    for (size_t i = 0; i < info_.entries.size(); ++i) {
      if (info_.entries[i].name == name) return i;
    }
    return absl::NotFoundError(absl::StrCat(where_, " has no entry '", name, "'"));
  }

  // Reads chunk `chunk` of entry `index`, checks its length and checksum,
  // and hands its bytes to `use` (valid only during the call).
  template <typename Use>
  absl::Status VisitChunk(size_t index, uint32_t chunk, Use use) {
    const EntryInfo& entry = info_.entries[index];
    const std::string what =
        absl::StrCat(where_, ": entry '", entry.name, "' chunk ", chunk, " of ", entry.num_chunks);
    if (chunk >= entry.num_chunks)
      return absl::OutOfRangeError(absl::StrCat(what, " is out of range"));
    const uint64_t expected_bytes = std::min<uint64_t>(
        entry.chunk_bytes, entry.size_bytes - uint64_t{chunk} * entry.chunk_bytes);
    rocksdb::PinnableSlice value;
    absl::Status status = db_->Get(
        snapshot_, ci::ChunkKey(info_.job_id, info_.step, static_cast<uint32_t>(index), chunk),
        &value, /*fill_cache=*/false, what);
    if (absl::IsNotFound(status)) return absl::DataLossError(absl::StrCat(what, " is missing"));
    if (!status.ok()) return absl::DataLossError(status.message());
    if (value.size() != expected_bytes) {
      return absl::DataLossError(
          absl::StrCat(what, " has ", value.size(), " bytes, expected ", expected_bytes));
    }
    if (Checksum64(value.data(), value.size()) != checksums[index][chunk]) {
      return absl::DataLossError(absl::StrCat(what, ": checksum mismatch"));
    }
    use(absl::string_view(value.data(), value.size()));
    return absl::OkStatus();
  }

  Database* const db_;                       // not owned; the store outlives its readers
  const rocksdb::Snapshot* const snapshot_;  // owned: released in the destructor
  const CheckpointInfo info_;
  const std::string where_;
};

absl::Status DeleteStep(Database* db, absl::string_view job_id, uint64_t step) {
  rocksdb::WriteBatch batch;
  batch.Delete(ci::ManifestKey(job_id, step));
  batch.DeleteRange(ci::ChunkRangeBegin(job_id, step), ci::ChunkRangeEnd(job_id, step));
  return db->Write(&batch, /*sync=*/true, /*wal=*/true,
                   absl::StrCat("deleting ", Where(job_id, step)));
}

// Removes what saves interrupted by a crash left behind: their pending marker
// and any chunks they flushed. None of it was ever visible to readers.
absl::Status RemoveInterruptedSaves(Database* db) {
  std::vector<std::pair<std::string, uint64_t>> interrupted;
  RETURN_IF_ERROR(db->Scan(ci::kPendingRoot, [&](absl::string_view key, absl::string_view) {
    std::string job_id;
    uint64_t step = 0;
    if (ci::ParseJobStepKey(key, ci::kPendingRoot, &job_id, &step)) {
      interrupted.emplace_back(std::move(job_id), step);
    }
    return absl::OkStatus();
  }));
  for (const auto& [job_id, step] : interrupted) {
    rocksdb::PinnableSlice manifest;
    const absl::Status found = db->Get(nullptr, ci::ManifestKey(job_id, step), &manifest, true, "");
    rocksdb::WriteBatch batch;
    if (absl::IsNotFound(found)) {
      batch.DeleteRange(ci::ChunkRangeBegin(job_id, step), ci::ChunkRangeEnd(job_id, step));
    }
    batch.Delete(ci::PendingKey(job_id, step));
    RETURN_IF_ERROR(db->Write(&batch, /*sync=*/true, /*wal=*/true, "removing an interrupted save"));
    RETURN_IF_ERROR(
        db->Reclaim(ci::ChunkRangeBegin(job_id, step), ci::ChunkRangeEnd(job_id, step)));
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
  // Chunks go to blob files; manifests and small tensors stay in the LSM tree.
  db_options.enable_blob_files = true;
  db_options.min_blob_size = 64 << 10;
  db_options.blob_file_size = 256 << 20;
  db_options.blob_compression_type = rocksdb::kNoCompression;
  // Each save flushes its own blob files, and retention deletes whole
  // checkpoints, so compaction frees whole blob files: no blob GC needed.
  db_options.enable_blob_garbage_collection = false;
  db_options.write_buffer_size = options.write_buffer_bytes;
  db_options.max_write_buffer_number = 3;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 2;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  if (options.env != nullptr) db_options.env = options.env;

  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::Open(db_options, dir, &raw);
  if (opened.IsIOError() && absl::StrContains(opened.ToString(), "lock")) {
    return absl::UnavailableError(absl::StrCat(
        "checkpoint store ", dir, " is in use by another process: ", opened.ToString()));
  }
  RETURN_IF_ERROR(ci::FromRocksDb(opened, absl::StrCat("opening checkpoint store ", dir)));
  auto db = std::make_unique<Database>(std::unique_ptr<rocksdb::DB>(raw), dir, options);

  rocksdb::PinnableSlice format;
  const absl::Status found = db->Get(nullptr, ci::kFormatKey, &format, true, dir);
  if (absl::IsNotFound(found)) {
    std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    if (it->Valid()) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " holds a RocksDB database that is not a potluck checkpoint store"));
    }
    rocksdb::WriteBatch batch;
    batch.Put(ci::kFormatKey, ci::kFormatValue);
    RETURN_IF_ERROR(db->Write(&batch, /*sync=*/true, /*wal=*/true, "writing the format marker"));
  } else if (!found.ok()) {
    return found;
  } else if (format.ToString() != ci::kFormatValue) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": unsupported checkpoint format '",
                                                      format.ToString(), "' (this build reads '",
                                                      ci::kFormatValue, "')"));
  }
  RETURN_IF_ERROR(RemoveInterruptedSaves(db.get()));
  return std::unique_ptr<CheckpointStore>(new CheckpointStore(std::move(db)));
}

CheckpointStore::CheckpointStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}

CheckpointStore::~CheckpointStore() {
  if (db_ != nullptr) db_->db()->Close().PermitUncheckedError();
}

absl::StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointStore::BeginSave(
    absl::string_view job_id, uint64_t step) {
  RETURN_IF_ERROR(ValidateJobId(job_id));
  const std::string where = Where(job_id, step);
  rocksdb::PinnableSlice existing;
  const absl::Status found =
      db_->Get(nullptr, ci::ManifestKey(job_id, step), &existing, true, where);
  if (found.ok()) return absl::AlreadyExistsError(absl::StrCat(where, " already exists"));
  if (!absl::IsNotFound(found)) return found;
  if (!db_->AcquireWriter()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", where, ": another save is in progress"));
  }
  auto writer = std::make_unique<WriterImpl>(db_.get(), std::string(job_id), step);
  // Marks the save in progress (so a crash's leftovers are found on Open) and
  // drops what an earlier interrupted attempt at this step may have left.
  rocksdb::WriteBatch batch;
  batch.Put(ci::PendingKey(job_id, step), "");
  batch.DeleteRange(ci::ChunkRangeBegin(job_id, step), ci::ChunkRangeEnd(job_id, step));
  RETURN_IF_ERROR(db_->Write(&batch, /*sync=*/false, /*wal=*/true, where));
  return std::unique_ptr<CheckpointWriter>(std::move(writer));
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
  const std::string where = Where(job_id, step);
  const rocksdb::Snapshot* snapshot = db_->db()->GetSnapshot();
  rocksdb::PinnableSlice frame;
  absl::Status status = db_->Get(snapshot, ci::ManifestKey(job_id, step), &frame, true, where);
  absl::StatusOr<v1::CheckpointManifest> manifest =
      status.ok() ? ci::DecodeManifest(absl::string_view(frame.data(), frame.size()), where)
                  : absl::StatusOr<v1::CheckpointManifest>(status);
  if (manifest.ok()) status = ValidateManifest(*manifest, where);
  if (!manifest.ok() || !status.ok()) {
    db_->db()->ReleaseSnapshot(snapshot);
    if (absl::IsNotFound(manifest.status())) {
      return absl::NotFoundError(absl::StrCat(where, " does not exist"));
    }
    return manifest.ok() ? status : manifest.status();
  }
  CheckpointInfo info;
  info.job_id = manifest->job_id();
  info.step = manifest->step();
  info.created = absl::FromUnixMicros(manifest->created_unix_micros());
  info.total_bytes = manifest->total_bytes();
  std::vector<std::vector<uint64_t>> checksums;
  for (const v1::ManifestEntry& entry : manifest->entries()) {
    info.entries.push_back(ToEntryInfo(entry));
    checksums.emplace_back(entry.chunk_checksums().begin(), entry.chunk_checksums().end());
  }
  auto reader = std::make_unique<ReaderImpl>(db_.get(), snapshot, std::move(info));
  reader->checksums = std::move(checksums);
  return std::unique_ptr<CheckpointReader>(std::move(reader));
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
  RETURN_IF_ERROR(DeleteStep(db_.get(), job_id, step));
  return db_->Reclaim(ci::ChunkRangeBegin(job_id, step), ci::ChunkRangeEnd(job_id, step));
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
  if (!deleted.empty()) {
    // Only the deleted steps' key range; newer checkpoints sort after it.
    RETURN_IF_ERROR(db_->Reclaim(ci::ChunkRangeBegin(job_id, deleted.front()),
                                 ci::ChunkRangeEnd(job_id, deleted.back())));
  }
  return deleted;
}

absl::StatusOr<std::optional<std::string>> CheckpointStore::GetRecord(absl::string_view key) {
  rocksdb::PinnableSlice value;
  const absl::Status status =
      db_->Get(nullptr, ci::RecordKey(key), &value, true, absl::StrCat("reading record ", key));
  if (absl::IsNotFound(status)) return std::optional<std::string>();
  RETURN_IF_ERROR(status);
  return std::optional<std::string>(value.ToString());
}

}  // namespace potluck
