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

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// One part, written to `path` as it arrives; the file goes with the object.
class SpooledPart {
 public:
  // Creates (truncates) the file.
  static absl::StatusOr<std::unique_ptr<SpooledPart>> Create(std::string path);
  ~SpooledPart();

  // kInvalidArgument naming the entry for an empty name, a negative
  // dimension, a slice past the entry's end, or a previous slice still
  // short of bytes.
  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count);
  // kInvalidArgument for bytes past the current slice's.
  absl::Status Append(const void* data, size_t size_bytes);
  // Flushes the file; the last slice must be complete.
  absl::Status Close();

  const std::string& path() const { return path_; }
  const std::vector<SpooledSlice>& slices() const { return slices_; }
  uint64_t bytes() const { return written_; }

 private:
  explicit SpooledPart(std::string path) : path_(std::move(path)) {}
  absl::Status CheckSliceComplete() const;

  const std::string path_;
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
