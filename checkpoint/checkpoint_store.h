// CheckpointStore: a job's state at a step, kept in RocksDB so that any
// interruption resumes exactly.
//
// A checkpoint is a set of named entries, each a tensor (dtype, shape, bytes)
// or a blob (opaque bytes: the shard ledger, RNG state, the job spec). Their
// bytes go into one data file per checkpoint, cut in chunks whose XXH3
// checksums the checkpoint's manifest keeps; manifests and the caller's records
// live in RocksDB.
//
// The commit rule: the data file is written and synced first; the manifest is
// written last, in one synced RocksDB write batch together with any caller
// records that must commit with it (the coordinator's ledger). A checkpoint
// exists exactly when its manifest does, so a crash at any point leaves either
// the new checkpoint complete or nothing a reader can see; the next Open
// removes the leftovers. Reads verify every chunk and return kDataLoss naming
// the entry and chunk, never wrong bytes. docs/checkpoint-format.md has the
// byte layout and why chunks are not RocksDB blob values.
//
// Thread-safety: CheckpointStore is thread-safe. At most one CheckpointWriter
// is open per store at a time. A CheckpointReader may be
// used by one thread at a time; it keeps its data file open, so retention
// cannot pull a checkpoint from under it. Readers and writers must not outlive
// the store.
#ifndef POTLUCK_CHECKPOINT_CHECKPOINT_STORE_H_
#define POTLUCK_CHECKPOINT_CHECKPOINT_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

#include "common/tensor_view.h"

namespace rocksdb {
class Env;
}

namespace potluck {

namespace checkpoint_internal {
class Database;
}

struct CheckpointOptions {
  // Bytes per chunk: the unit of checksumming and of partial reads.
  uint32_t chunk_bytes = 4 << 20;
  // The environment all I/O goes through, RocksDB's and the data files' (for
  // fault injection); nullptr = the default. Not owned: must outlive the store.
  rocksdb::Env* env = nullptr;
};

enum class EntryKind { kTensor, kBlob };

struct EntryInfo {
  std::string name;
  EntryKind kind = EntryKind::kTensor;
  DType dtype = DType::kUInt8;
  std::vector<int64_t> shape;
  uint64_t size_bytes = 0;
  uint32_t chunk_bytes = 0;
  uint32_t num_chunks = 0;

  uint64_t count() const { return size_bytes / DTypeSize(dtype); }
};

struct CheckpointInfo {
  std::string job_id;
  uint64_t step = 0;
  absl::Time created;
  uint64_t total_bytes = 0;
  std::vector<EntryInfo> entries;

  // The entry called `name`, or nullptr.
  const EntryInfo* Find(absl::string_view name) const;
};

// A key the caller commits atomically with a checkpoint: a put, or a delete
// when `value` is empty. Kept apart from checkpoint data; read with GetRecord.
struct Record {
  std::string key;
  std::optional<std::string> value;
};

// One tensor to save. `shape` defaults to [data.count()]; data must be on the CPU.
struct TensorToSave {
  std::string name;
  TensorView data;
  std::vector<int64_t> shape;
};

struct BlobToSave {
  std::string name;
  absl::string_view bytes;
};

// Which checkpoints retention keeps: the newest `keep_last` steps, plus every
// step that is a multiple of `keep_every` (0 = none). The newest is always kept.
struct RetentionPolicy {
  uint32_t keep_last = 1;
  uint64_t keep_every = 0;
};

// Writes one checkpoint entry by entry, chunk by chunk: a gRPC stream or a
// huge tensor never has to be in memory at once. Abandoned (destroyed before
// Commit) it leaves nothing a reader can see.
class CheckpointWriter {
 public:
  virtual ~CheckpointWriter() = default;
  // Starts the next entry; the previous one must have received all its bytes.
  virtual absl::Status BeginEntry(absl::string_view name, EntryKind kind, DType dtype,
                                  std::vector<int64_t> shape) = 0;
  // Appends bytes to the current entry; more than it declared is kInvalidArgument.
  virtual absl::Status Append(const void* data, size_t size_bytes) = 0;
  // Makes the checkpoint visible, atomically with `records`.
  virtual absl::Status Commit(absl::Span<const Record> records = {}) = 0;
};

// Writes one part of a checkpoint that several uploaders send together (the
// coordinator's split upload): each part holds a slice of entries, elements
// [offset, offset + count) of the whole entry (a blob is a uint8 entry of
// shape [bytes]). Whoever receives the parts joins them once the slices of
// every entry tile it exactly. Abandoned before Finish, it leaves nothing.
class CheckpointPartWriter {
 public:
  virtual ~CheckpointPartWriter() = default;
  // Starts the next slice; `shape` is the whole entry's. The previous slice
  // must have received all its bytes (count * the dtype's size).
  virtual absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                                  std::vector<int64_t> shape, uint64_t offset, uint64_t count) = 0;
  virtual absl::Status Append(const void* data, size_t size_bytes) = 0;
  // Hands the part over. True when it was the last one missing and the whole
  // checkpoint is now committed.
  virtual absl::StatusOr<bool> Finish() = 0;
};

// Reads one committed checkpoint, verifying every chunk it reads.
class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;
  virtual const CheckpointInfo& info() const = 0;
  // One chunk of an entry, verified (the streaming read).
  virtual absl::StatusOr<std::string> ReadChunk(absl::string_view name, uint32_t chunk) = 0;
  // The whole tensor into `out`, whose dtype and count must match the entry.
  virtual absl::Status ReadTensor(absl::string_view name, TensorView out) = 0;
  // Elements [offset, offset + out.count()) of a tensor; reads only the
  // chunks that hold them.
  virtual absl::Status ReadSlice(absl::string_view name, uint64_t offset, TensorView out) = 0;
  virtual absl::StatusOr<std::string> ReadBlob(absl::string_view name) = 0;
  // Reads and verifies every chunk of every entry.
  virtual absl::Status Verify() = 0;
};

class CheckpointStore {
 public:
  // Opens (creating if needed) the store in directory `dir` and removes what
  // interrupted saves left behind.
  static absl::StatusOr<std::unique_ptr<CheckpointStore>> Open(
      const std::string& dir, const CheckpointOptions& options = {});
  ~CheckpointStore();
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;

  // Saves a whole checkpoint in one call. kAlreadyExists if (job, step) is
  // committed already.
  absl::Status Save(absl::string_view job_id, uint64_t step, absl::Span<const TensorToSave> tensors,
                    absl::Span<const BlobToSave> blobs = {}, absl::Span<const Record> records = {});
  // Starts a streaming save. kFailedPrecondition while another writer is open.
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginSave(absl::string_view job_id,
                                                              uint64_t step);

  absl::StatusOr<std::vector<std::string>> ListJobs();
  // Committed steps of a job, ascending.
  absl::StatusOr<std::vector<uint64_t>> ListSteps(absl::string_view job_id);
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(absl::string_view job_id,
                                                                   uint64_t step);
  // The newest committed checkpoint; kNotFound if the job has none.
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLatest(absl::string_view job_id);

  // Deletes the checkpoints `policy` does not keep and reclaims their disk
  // space. Returns the deleted steps.
  absl::StatusOr<std::vector<uint64_t>> ApplyRetention(absl::string_view job_id,
                                                       const RetentionPolicy& policy);
  absl::Status Delete(absl::string_view job_id, uint64_t step);

  // A record committed with a checkpoint; nullopt if absent.
  absl::StatusOr<std::optional<std::string>> GetRecord(absl::string_view key);

 private:
  explicit CheckpointStore(std::unique_ptr<checkpoint_internal::Database> db);
  std::unique_ptr<checkpoint_internal::Database> db_;
};

// Whether `job_id` is usable as a job id: 1-64 characters from [a-z0-9._-],
// starting with a letter or digit.
absl::Status ValidateJobId(absl::string_view job_id);

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_CHECKPOINT_STORE_H_
