// A checkpoint's layout, and the rule that keeps a job's checkpoints of one
// layout. Private to coordinator/.
//
// A layout is what a checkpoint holds: every entry's name and kind, and for
// a tensor its dtype and shape (a blob's size is free: the trainer's
// counters grow). A job's first committed checkpoint fixes its layout; a
// later upload of another layout (an entry missing, added, or of another
// shape: one member's garbage in place of the group's model) is refused by
// name before anything commits, so the checkpoint every member restores
// from is always one the job's model can load.
//
// Thread-safety: plain functions.
#ifndef POTLUCK_COORDINATOR_INTERNAL_LAYOUT_H_
#define POTLUCK_COORDINATOR_INTERNAL_LAYOUT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"

namespace potluck::coordinator_internal {

struct EntryLayout {
  std::string name;
  EntryKind kind = EntryKind::kTensor;
  DType dtype = DType::kUInt8;  // tensors only
  std::vector<int64_t> shape;   // tensors only

  bool operator==(const EntryLayout& other) const;
};
using Layout = std::vector<EntryLayout>;

// The layout of a committed checkpoint, and of a whole upload.
Layout LayoutOf(const CheckpointInfo& info);
Layout LayoutOf(absl::Span<const TensorToSave> tensors, absl::Span<const BlobToSave> blobs);

// kInvalidArgument naming the first entry where `upload` (of `step`) differs
// from `committed`, the layout of the job's checkpoints (nullopt: it has
// none yet, and `upload` fixes it); also for an entry named twice.
absl::Status CheckLayout(const Layout& upload, const std::optional<Layout>& committed,
                         uint64_t step);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_LAYOUT_H_
