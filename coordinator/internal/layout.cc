#include "coordinator/internal/layout.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace potluck::coordinator_internal {
namespace {

std::string Describe(const EntryLayout& entry) {
  if (entry.kind == EntryKind::kBlob) return "a blob";
  return absl::StrCat("a ", DTypeName(entry.dtype), " tensor [", absl::StrJoin(entry.shape, ","),
                      "]");
}

}  // namespace

bool EntryLayout::operator==(const EntryLayout& other) const {
  if (name != other.name || kind != other.kind) return false;
  return kind == EntryKind::kBlob || (dtype == other.dtype && shape == other.shape);
}

Layout LayoutOf(const CheckpointInfo& info) {
  Layout layout;
  for (const EntryInfo& entry : info.entries) {
    layout.push_back({entry.name, entry.kind, entry.dtype, entry.shape});
  }
  return layout;
}

Layout LayoutOf(absl::Span<const TensorToSave> tensors, absl::Span<const BlobToSave> blobs) {
  Layout layout;
  for (const TensorToSave& tensor : tensors) {
    std::vector<int64_t> shape = tensor.shape;
    // The store's convention (CheckpointStore::Save): no shape is a vector.
    if (shape.empty() && tensor.data.count() != 1) {
      shape.push_back(static_cast<int64_t>(tensor.data.count()));
    }
    layout.push_back({tensor.name, EntryKind::kTensor, tensor.data.dtype(), std::move(shape)});
  }
  for (const BlobToSave& blob : blobs) layout.push_back({blob.name, EntryKind::kBlob, {}, {}});
  return layout;
}

absl::Status CheckLayout(const Layout& upload, const std::optional<Layout>& committed,
                         uint64_t step) {
  const std::string what = absl::StrCat("the checkpoint of step ", step);
  std::map<std::string, const EntryLayout*> uploaded;
  for (const EntryLayout& entry : upload) {
    if (!uploaded.emplace(entry.name, &entry).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " holds entry '", entry.name, "' twice; nothing is committed"));
    }
  }
  if (!committed.has_value()) return absl::OkStatus();
  for (const EntryLayout& expected : *committed) {
    auto it = uploaded.find(expected.name);
    if (it == uploaded.end()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " lacks entry '", expected.name, "' (",
                                                     Describe(expected),
                                                     ") that the job's checkpoints hold; "
                                                     "nothing is committed"));
    }
    if (!(*it->second == expected)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": entry '", expected.name, "' is ", Describe(*it->second),
          ", the job's checkpoints hold ", Describe(expected), "; nothing is committed"));
    }
    uploaded.erase(it);
  }
  if (!uploaded.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " holds entry '", uploaded.begin()->first,
                                                   "', which the job's checkpoints do not; "
                                                   "nothing is committed"));
  }
  return absl::OkStatus();
}

}  // namespace potluck::coordinator_internal
