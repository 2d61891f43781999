// Checkpoints uploaded in parts (Coordinator::BeginCheckpointPart): each part
// is spooled to its own file as it streams in, slice by slice, and once every
// part of a step is in, JoinParts streams them into one checkpoint writer.
// Private to coordinator/.
//
// Thread-safety: a SpooledPart is used by one thread at a time.
#ifndef POTLUCK_COORDINATOR_INTERNAL_PARTS_H_
#define POTLUCK_COORDINATOR_INTERNAL_PARTS_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"
#include "coordinator/internal/layout.h"

namespace potluck::coordinator_internal {

struct SpooledSlice {
  std::string name;
  EntryKind kind = EntryKind::kTensor;
  DType dtype = DType::kUInt8;
  std::vector<int64_t> shape;  // the whole entry's
  uint64_t offset = 0;         // elements
  uint64_t count = 0;
  uint64_t file_offset = 0;  // bytes into the part's file
};

// What every spooled part holds on disk together, bounded so that no
// upload (finished or not) can fill the coordinator's disk: at most
// `max_bytes` (0: no fixed limit), and the spool's filesystem keeps a
// reserve free (5% of it, at most 1 GiB) for the commits themselves.
// Thread-safe.
class SpoolQuota {
 public:
  SpoolQuota(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  // kResourceExhausted when `bytes` more would cross either bound.
  absl::Status Take(uint64_t bytes);
  void Give(uint64_t bytes);
  uint64_t used() const;

 private:
  const std::string dir_;
  const uint64_t max_bytes_;
  mutable absl::Mutex mu_;
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

// What a slice's description costs an upload (its name, its shape and a
// fixed overhead): counted like its bytes, so that names cannot grow the
// coordinator's memory for free.
uint64_t SliceMetadataBytes(absl::string_view name, const std::vector<int64_t>& shape);
inline constexpr size_t kMaxEntryNameBytes = 1024;
inline constexpr size_t kMaxEntryDims = 16;
// The most metadata (SliceMetadataBytes) one part may describe.
inline constexpr uint64_t kMaxPartMetadataBytes = uint64_t{16} << 20;

// One part, written to `path` as it arrives; the file goes with the object,
// and its bytes and metadata are charged to `quota` while it exists.
class SpooledPart {
 public:
  // Creates (truncates) the file. `quota` is not owned and outlives the part.
  static absl::StatusOr<std::unique_ptr<SpooledPart>> Create(std::string path, SpoolQuota* quota);
  ~SpooledPart();

  // kInvalidArgument naming the entry for an empty or too long name, a
  // negative dimension or too many, a slice past the entry's end, or a
  // previous slice still short of bytes; kResourceExhausted past
  // kMaxPartMetadataBytes or the quota.
  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count);
  // kInvalidArgument for bytes past the current slice's.
  absl::Status Append(const void* data, size_t size_bytes);
  // Flushes the file; the last slice must be complete.
  absl::Status Close();

  const std::string& path() const { return path_; }
  const std::vector<SpooledSlice>& slices() const { return slices_; }
  uint64_t bytes() const { return written_; }
  // Its bytes and its slices' metadata (SliceMetadataBytes).
  uint64_t charged() const { return charged_; }

 private:
  SpooledPart(std::string path, SpoolQuota* quota) : path_(std::move(path)), quota_(quota) {}
  absl::Status CheckSliceComplete() const;
  absl::Status Charge(uint64_t bytes);

  const std::string path_;
  SpoolQuota* const quota_;  // not owned
  uint64_t charged_ = 0;     // to quota_
  uint64_t metadata_ = 0;
  std::ofstream out_;
  std::vector<SpooledSlice> slices_;
  uint64_t written_ = 0;     // bytes in the file
  uint64_t slice_left_ = 0;  // bytes the current slice still expects
};

// The layout of the checkpoint `parts` (one per member, by rank) make up.
// kInvalidArgument naming the entry unless the members agree on it: every
// part slices every tensor, with the same kind, dtype and shape, and blobs
// come from part 0 alone, so no single member adds or drops an entry.
absl::StatusOr<Layout> LayoutOfParts(absl::Span<const SpooledPart* const> parts);

// Writes every entry the parts hold into `out` (order: first seen, scanning
// the parts in order), each as its slices in offset order. Nothing is written
// unless the parts agree on every entry's kind, dtype and shape, and its
// slices tile it with no gap or overlap (and LayoutOfParts accepts them):
// kInvalidArgument names the entry.
absl::Status JoinParts(absl::Span<const SpooledPart* const> parts, CheckpointWriter* out);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_PARTS_H_
