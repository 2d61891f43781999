#include "checkpoint/checkpoint_store.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <future>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

#include "checkpoint/internal/format.h"
#include "checkpoint/rocksdb_status.h"
#include "common/checksum.h"
#include "common/status.h"
#include "rocksdb/db.h"
#include "rocksdb/file_system.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace potluck {

namespace checkpoint_internal {

// The RocksDB instance holding manifests and records, the file system that
// holds the data files (RocksDB's, so one injected Env covers both), and the
// one-writer-at-a-time slot.
class Database {
 public:
  Database(std::unique_ptr<rocksdb::DB> db, std::string dir, CheckpointOptions options,
           std::shared_ptr<rocksdb::FileSystem> fs)
      : db_(std::move(db)), dir_(std::move(dir)), options_(options), fs_(std::move(fs)) {}

  rocksdb::DB* db() { return db_.get(); }
  rocksdb::FileSystem* fs() { return fs_.get(); }
  const CheckpointOptions& options() const { return options_; }

  std::string JobDataDir(absl::string_view job_id) const {
    return absl::StrCat(dir_, "/", kDataDir, "/", job_id);
  }
  std::string DataPath(absl::string_view job_id, uint64_t step) const {
    return absl::StrCat(JobDataDir(job_id), "/", DataFileName(step));
  }

  bool AcquireWriter() { return !writer_active_.exchange(true); }
  void ReleaseWriter() { writer_active_ = false; }

  absl::Status Write(rocksdb::WriteBatch* batch, bool sync, absl::string_view context) {
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    return FromRocksDb(db_->Write(write_options, batch), context);
  }

  // Reads one key; kNotFound if absent.
  absl::Status Get(const rocksdb::Snapshot* snapshot, absl::string_view key,
                   rocksdb::PinnableSlice* value, absl::string_view context) {
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot;
    read_options.verify_checksums = true;
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

  // Makes a directory's entries (a new or deleted data file) durable.
  absl::Status SyncDir(const std::string& path) {
    std::unique_ptr<rocksdb::FSDirectory> dir;
    RETURN_IF_ERROR(FromRocksDb(fs_->NewDirectory(path, rocksdb::IOOptions(), &dir, nullptr),
                                absl::StrCat("opening ", path)));
    return FromRocksDb(
        dir->FsyncWithDirOptions(rocksdb::IOOptions(), nullptr, rocksdb::DirFsyncOptions()),
        absl::StrCat("syncing ", path));
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  const std::string dir_;
  const CheckpointOptions options_;
  const std::shared_ptr<rocksdb::FileSystem> fs_;
  std::atomic<bool> writer_active_{false};
};

}  // namespace checkpoint_internal

using checkpoint_internal::Database;
namespace ci = checkpoint_internal;

namespace {

constexpr uint64_t kMaxEntryBytes = uint64_t{1} << 50;
constexpr size_t kMaxNameBytes = 1024;

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
// before anything trusts its sizes and offsets.
absl::Status ValidateManifest(const v1::CheckpointManifest& manifest, absl::string_view where) {
  uint64_t offset = ci::kDataHeaderBytes;
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
        entry.size_bytes() % DTypeSize(static_cast<DType>(entry.dtype())) != 0 ||
        entry.data_offset() != offset) {
      return absl::DataLossError(
          absl::StrCat(where, ": entry '", entry.name(), "' has inconsistent sizes or offsets"));
    }
    offset += entry.size_bytes();
  }
  if (offset != manifest.data_file_bytes()) {
    return absl::DataLossError(absl::StrCat(
        where, ": entries take ", offset, " bytes of a data file of ", manifest.data_file_bytes()));
  }
  return absl::OkStatus();
}

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
    manifest_.set_format_version(ci::kFormatVersion);
    manifest_.set_job_id(job_id_);
    manifest_.set_step(step_);
    manifest_.set_data_file_bytes(ci::kDataHeaderBytes);
  }

  ~WriterImpl() override {
    if (!committed_) {
      // Best effort: Open removes the file if this fails or never runs.
      if (file_ != nullptr) file_->Close(rocksdb::IOOptions(), nullptr).PermitUncheckedError();
      db_->fs()->DeleteFile(path_, rocksdb::IOOptions(), nullptr).PermitUncheckedError();
    }
    db_->ReleaseWriter();
  }

  absl::Status WriteHeader() { return Remember(FileWrite(ci::DataFileHeader(step_))); }

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
    commit.Put(ci::ManifestKey(job_id_, step_), ci::EncodeManifest(manifest_));
    for (const Record& record : records) {
      if (record.value.has_value()) {
        commit.Put(ci::RecordKey(record.key), *record.value);
      } else {
        commit.Delete(ci::RecordKey(record.key));
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

// Reads from the data file it opened with the checkpoint: the open file stays
// readable even if retention deletes the checkpoint meanwhile.
class ReaderImpl final : public CheckpointReader {
 public:
  ReaderImpl(CheckpointInfo info, v1::CheckpointManifest manifest,
             std::unique_ptr<rocksdb::FSRandomAccessFile> file)
      : info_(std::move(info)),
        manifest_(std::move(manifest)),
        file_(std::move(file)),
        where_(Where(info_.job_id, info_.step)) {}

  const CheckpointInfo& info() const override { return info_; }

  absl::StatusOr<std::string> ReadChunk(absl::string_view name, uint32_t chunk) override {
    ASSIGN_OR_RETURN(const size_t index, FindEntry(name));
    RETURN_IF_ERROR(CheckChunkIndex(index, chunk));
    std::string out(ChunkSize(index, chunk), '\0');
    RETURN_IF_ERROR(ReadVerifiedChunk(index, chunk, out.data()));
    return out;
  }

  absl::Status ReadTensor(absl::string_view name, TensorView out) override {
    ASSIGN_OR_RETURN(const size_t index, FindEntry(name));
    if (out.count() != info_.entries[index].count()) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": '", name, "' has ",
                                                     info_.entries[index].count(),
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
    const uint64_t begin = offset * DTypeSize(entry.dtype);
    const uint64_t end = begin + out.size_bytes();
    char* dest = static_cast<char*>(out.data());
    std::string staging;
    for (uint64_t position = begin; position < end;) {
      const uint32_t chunk = static_cast<uint32_t>(position / entry.chunk_bytes);
      const uint64_t chunk_start = uint64_t{chunk} * entry.chunk_bytes;
      const uint64_t chunk_size = ChunkSize(index, chunk);
      if (position == chunk_start && end - position >= chunk_size) {
        // A run of whole chunks goes straight into the destination.
        uint32_t last = chunk;
        uint64_t run_end = chunk_start + chunk_size;
        while (last + 1 < entry.num_chunks && end - run_end >= ChunkSize(index, last + 1)) {
          run_end += ChunkSize(index, ++last);
        }
        RETURN_IF_ERROR(ReadWholeChunks(index, chunk, last + 1 - chunk, dest + (position - begin)));
        position = run_end;
        continue;
      }
      const uint64_t take = std::min(chunk_start + chunk_size, end) - position;
      staging.resize(chunk_size);
      RETURN_IF_ERROR(ReadVerifiedChunk(index, chunk, staging.data()));
      std::memcpy(dest + (position - begin), staging.data() + (position - chunk_start), take);
      position += take;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ReadBlob(absl::string_view name) override {
    ASSIGN_OR_RETURN(const size_t index, FindEntry(name));
    std::string out(info_.entries[index].size_bytes, '\0');
    for (uint32_t chunk = 0; chunk < info_.entries[index].num_chunks; ++chunk) {
      RETURN_IF_ERROR(ReadVerifiedChunk(
          index, chunk, out.data() + uint64_t{chunk} * info_.entries[index].chunk_bytes));
    }
    return out;
  }

  absl::Status Verify() override {
    std::string buffer;
    for (size_t index = 0; index < info_.entries.size(); ++index) {
      for (uint32_t chunk = 0; chunk < info_.entries[index].num_chunks; ++chunk) {
        buffer.resize(ChunkSize(index, chunk));
        RETURN_IF_ERROR(ReadVerifiedChunk(index, chunk, buffer.data()));
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<size_t> FindEntry(absl::string_view name) const {
    for (size_t i = 0; i < info_.entries.size(); ++i) {
      if (info_.entries[i].name == name) return i;
    }
    return absl::NotFoundError(absl::StrCat(where_, " has no entry '", name, "'"));
  }

  uint64_t ChunkSize(size_t index, uint32_t chunk) const {
    const EntryInfo& entry = info_.entries[index];
    return std::min<uint64_t>(entry.chunk_bytes,
                              entry.size_bytes - uint64_t{chunk} * entry.chunk_bytes);
  }

  absl::Status CheckChunkIndex(size_t index, uint32_t chunk) const {
    if (chunk >= info_.entries[index].num_chunks) {
      return absl::OutOfRangeError(
          absl::StrCat(where_, ": entry '", info_.entries[index].name, "' has no chunk ", chunk));
    }
    return absl::OkStatus();
  }

  // Reads chunk `chunk` of entry `index` into `out` (ChunkSize bytes) and
  // checks it against the manifest's checksum: kDataLoss, never wrong bytes.
  absl::Status ReadVerifiedChunk(size_t index, uint32_t chunk, char* out) {
    RETURN_IF_ERROR(ReadBytes(index, chunk, ChunkSize(index, chunk), out));
    return VerifyChunk(index, chunk, out);
  }

  // Reads `count` whole chunks from `first` on into `out`, verifying each
  // chunk while it is still in the CPU cache (no second pass). Large runs go
  // in pieces, kPiecesInFlight at a time, each read and verified on its own
  // thread: the disk always has the next piece queued, as the kernel's
  // readahead gives a plain sequential read().
  absl::Status ReadWholeChunks(size_t index, uint32_t first, uint32_t count, char* out) {
    constexpr uint64_t kPieceBytes = 8 << 20;
    constexpr size_t kPiecesInFlight = 3;
    const uint64_t chunk_bytes = info_.entries[index].chunk_bytes;
    const uint32_t chunks_per_piece =
        static_cast<uint32_t>(std::max<uint64_t>(1, kPieceBytes / chunk_bytes));
    auto read_piece = [this, index, first, chunk_bytes, out](uint32_t from, uint32_t n) {
      char* data = out + uint64_t{from - first} * chunk_bytes;
      uint64_t bytes = 0;
      for (uint32_t i = 0; i < n; ++i) bytes += ChunkSize(index, from + i);
      RETURN_IF_ERROR(ReadBytes(index, from, bytes, data));
      for (uint32_t i = 0; i < n; ++i) {
        RETURN_IF_ERROR(VerifyChunk(index, from + i, data + uint64_t{i} * chunk_bytes));
      }
      return absl::OkStatus();
    };
    // A small entry (most of a model's tensors by count) is one piece: no thread.
    if (count <= chunks_per_piece) return read_piece(first, count);
    std::deque<std::future<absl::Status>> in_flight;
    absl::Status status;
    for (uint32_t piece = first; piece < first + count && status.ok(); piece += chunks_per_piece) {
      if (in_flight.size() == kPiecesInFlight) {
        status.Update(in_flight.front().get());
        in_flight.pop_front();
      }
      in_flight.push_back(std::async(std::launch::async, read_piece, piece,
                                     std::min(chunks_per_piece, first + count - piece)));
    }
    // Every piece is waited for: they write into `out` and use `this`.
    for (std::future<absl::Status>& piece : in_flight) status.Update(piece.get());
    return status;
  }

  // Reads `size` bytes of entry `index` starting at chunk `chunk` into `out`.
  absl::Status ReadBytes(size_t index, uint32_t chunk, uint64_t size, char* out) {
    const EntryInfo& entry = info_.entries[index];
    const uint64_t offset = manifest_.entries(static_cast<int>(index)).data_offset() +
                            uint64_t{chunk} * entry.chunk_bytes;
    rocksdb::Slice result;
    const rocksdb::IOStatus read =
        file_->Read(offset, size, rocksdb::IOOptions(), &result, out, nullptr);
    if (!read.ok())
      return absl::DataLossError(absl::StrCat(What(index, chunk), ": ", read.ToString()));
    if (result.size() != size) {
      return absl::DataLossError(absl::StrCat(What(index, chunk), ": the data file ends after ",
                                              result.size(), " of ", size, " bytes"));
    }
    if (result.data() != out) std::memmove(out, result.data(), size);
    return absl::OkStatus();
  }

  // Checks chunk `chunk` of entry `index`, already in `data`, against the
  // manifest: kDataLoss, never wrong bytes.
  absl::Status VerifyChunk(size_t index, uint32_t chunk, const char* data) const {
    const uint64_t expected =
        manifest_.entries(static_cast<int>(index)).chunk_checksums(static_cast<int>(chunk));
    if (Checksum64(data, ChunkSize(index, chunk)) != expected) {
      return absl::DataLossError(absl::StrCat(What(index, chunk), ": checksum mismatch"));
    }
    return absl::OkStatus();
  }

  std::string What(size_t index, uint32_t chunk) const {
    const EntryInfo& entry = info_.entries[index];
    return absl::StrCat(where_, ": entry '", entry.name, "' chunk ", chunk, " of ",
                        entry.num_chunks);
  }

  const CheckpointInfo info_;
  const v1::CheckpointManifest manifest_;
  const std::unique_ptr<rocksdb::FSRandomAccessFile> file_;
  const std::string where_;
};

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
  const std::string where = Where(job_id, step);
  rocksdb::PinnableSlice existing;
  const absl::Status found = db_->Get(nullptr, ci::ManifestKey(job_id, step), &existing, where);
  if (found.ok()) return absl::AlreadyExistsError(absl::StrCat(where, " already exists"));
  if (!absl::IsNotFound(found)) return found;
  if (!db_->AcquireWriter()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", where, ": another save is in progress"));
  }
  const std::string job_dir = db_->JobDataDir(job_id);
  rocksdb::IOStatus io = db_->fs()->CreateDirIfMissing(job_dir.substr(0, job_dir.rfind('/')),
                                                       rocksdb::IOOptions(), nullptr);
  if (io.ok()) io = db_->fs()->CreateDirIfMissing(job_dir, rocksdb::IOOptions(), nullptr);
  // Creating the file truncates whatever an interrupted attempt at this step left.
  std::unique_ptr<rocksdb::FSWritableFile> file;
  if (io.ok()) {
    io = db_->fs()->NewWritableFile(db_->DataPath(job_id, step), rocksdb::FileOptions(), &file,
                                    nullptr);
  }
  if (!io.ok()) {
    db_->ReleaseWriter();
    return FromRocksDb(io, absl::StrCat(where, ": creating its data file"));
  }
  auto writer = std::make_unique<WriterImpl>(db_.get(), std::string(job_id), step, std::move(file));
  RETURN_IF_ERROR(writer->WriteHeader());
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
  rocksdb::PinnableSlice frame;
  const absl::Status found = db_->Get(nullptr, ci::ManifestKey(job_id, step), &frame, where);
  if (absl::IsNotFound(found)) return absl::NotFoundError(absl::StrCat(where, " does not exist"));
  RETURN_IF_ERROR(found);
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest,
                   ci::DecodeManifest(absl::string_view(frame.data(), frame.size()), where));
  RETURN_IF_ERROR(ValidateManifest(manifest, where));
  const std::string path = db_->DataPath(job_id, step);
  std::unique_ptr<rocksdb::FSRandomAccessFile> file;
  const rocksdb::IOStatus opened =
      db_->fs()->NewRandomAccessFile(path, rocksdb::FileOptions(), &file, nullptr);
  if (!opened.ok()) {
    return absl::DataLossError(
        absl::StrCat(where, ": its data file cannot be opened: ", opened.ToString()));
  }
  // Checkpoints are mostly read whole, front to back: a larger kernel
  // readahead window keeps the disk busy between the many small entries.
  file->Hint(rocksdb::FSRandomAccessFile::kSequential);
  uint64_t file_bytes = 0;
  const rocksdb::IOStatus sized =
      db_->fs()->GetFileSize(path, rocksdb::IOOptions(), &file_bytes, nullptr);
  if (!sized.ok() || file_bytes != manifest.data_file_bytes()) {
    return absl::DataLossError(absl::StrCat(where, ": data file ", path, " has ", file_bytes,
                                            " bytes, the manifest says ",
                                            manifest.data_file_bytes()));
  }
  CheckpointInfo info;
  info.job_id = manifest.job_id();
  info.step = manifest.step();
  info.created = absl::FromUnixMicros(manifest.created_unix_micros());
  info.total_bytes = manifest.total_bytes();
  for (const v1::ManifestEntry& entry : manifest.entries())
    info.entries.push_back(ToEntryInfo(entry));
  return std::unique_ptr<CheckpointReader>(
      new ReaderImpl(std::move(info), std::move(manifest), std::move(file)));
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
