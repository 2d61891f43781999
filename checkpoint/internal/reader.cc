// The load path: a committed checkpoint's manifest, validated, and its data
// file read and verified chunk by chunk (see checkpoint_store.h).
#include <algorithm>
#include <cstring>
#include <deque>
#include <future>

#include "absl/strings/str_cat.h"

#include "checkpoint/internal/store_parts.h"
#include "common/checksum.h"

namespace potluck::checkpoint_internal {

namespace {

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
  uint64_t offset = kDataHeaderBytes;
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

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenReader(Database* db, absl::string_view job_id,
                                                             uint64_t step) {
  const std::string where = Where(job_id, step);
  rocksdb::PinnableSlice frame;
  const absl::Status found = db->Get(nullptr, ManifestKey(job_id, step), &frame, where);
  if (absl::IsNotFound(found)) return absl::NotFoundError(absl::StrCat(where, " does not exist"));
  RETURN_IF_ERROR(found);
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest,
                   DecodeManifest(absl::string_view(frame.data(), frame.size()), where));
  RETURN_IF_ERROR(ValidateManifest(manifest, where));
  const std::string path = db->DataPath(job_id, step);
  std::unique_ptr<rocksdb::FSRandomAccessFile> file;
  const rocksdb::IOStatus opened =
      db->fs()->NewRandomAccessFile(path, rocksdb::FileOptions(), &file, nullptr);
  if (!opened.ok()) {
    return absl::DataLossError(
        absl::StrCat(where, ": its data file cannot be opened: ", opened.ToString()));
  }
  // Checkpoints are mostly read whole, front to back: a larger kernel
  // readahead window keeps the disk busy between the many small entries.
  file->Hint(rocksdb::FSRandomAccessFile::kSequential);
  uint64_t file_bytes = 0;
  const rocksdb::IOStatus sized =
      db->fs()->GetFileSize(path, rocksdb::IOOptions(), &file_bytes, nullptr);
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

}  // namespace potluck::checkpoint_internal
