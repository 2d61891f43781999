#include "coordinator/internal/parts.h"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "common/status.h"

namespace potluck::coordinator_internal {
namespace {

constexpr size_t kCopyBytes = 1 << 20;

// Elements of `shape` (1 for a scalar); nullopt for a negative dimension or
// an overflow.
std::optional<uint64_t> Elements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (const int64_t dim : shape) {
    if (dim < 0) return std::nullopt;
    const auto d = static_cast<uint64_t>(dim);
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

absl::Status SpoolQuota::Take(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (max_bytes_ > 0 && bytes > max_bytes_ - std::min(used_, max_bytes_)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the coordinator's upload spool is full (", used_, " of ", max_bytes_,
        " bytes, --max-spool-bytes): retry once other uploads are committed or dropped"));
  }
  std::error_code error;
  const std::filesystem::space_info space = std::filesystem::space(dir_, error);
  if (!error) {
    const uint64_t reserve = std::min<uint64_t>(uint64_t{1} << 30, space.capacity / 20);
    if (space.available < reserve || bytes > space.available - reserve) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the coordinator's disk has ", space.available, " bytes free, and keeps ",
                       reserve, " for commits: an upload of ", bytes, " more is refused"));
    }
  }
  used_ += bytes;
  return absl::OkStatus();
}

void SpoolQuota::Give(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  used_ -= std::min(used_, bytes);
}

uint64_t SpoolQuota::used() const {
  absl::MutexLock lock(&mu_);
  return used_;
}

uint64_t SliceMetadataBytes(absl::string_view name, const std::vector<int64_t>& shape) {
  return 64 + name.size() + sizeof(int64_t) * shape.size();
}

absl::StatusOr<std::unique_ptr<SpooledPart>> SpooledPart::Create(std::string path,
                                                                 SpoolQuota* quota) {
  std::unique_ptr<SpooledPart> part(new SpooledPart(std::move(path), quota));
  part->out_.open(part->path_, std::ios::binary | std::ios::trunc);
  if (!part->out_) return ErrnoStatus(errno, absl::StrCat("creating ", part->path_));
  return part;
}

SpooledPart::~SpooledPart() {
  out_.close();
  std::error_code ignored;
  std::filesystem::remove(path_, ignored);
  quota_->Give(charged_);
}

absl::Status SpooledPart::Charge(uint64_t bytes) {
  RETURN_IF_ERROR(quota_->Take(bytes));
  charged_ += bytes;
  return absl::OkStatus();
}

absl::Status SpooledPart::CheckSliceComplete() const {
  if (slice_left_ == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("entry '", slices_.back().name, "' is ",
                                                 slice_left_, " bytes short of its slice"));
}

absl::Status SpooledPart::BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                                     std::vector<int64_t> shape, uint64_t offset, uint64_t count) {
  RETURN_IF_ERROR(CheckSliceComplete());
  if (name.empty()) return absl::InvalidArgumentError("an entry has an empty name");
  if (name.size() > kMaxEntryNameBytes || shape.size() > kMaxEntryDims) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry '", name.substr(0, 64), "...': names hold at most ", kMaxEntryNameBytes,
                     " bytes and shapes at most ", kMaxEntryDims, " dimensions"));
  }
  const uint64_t metadata = SliceMetadataBytes(name, shape);
  if (metadata_ + metadata > kMaxPartMetadataBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("an upload part describes at most ",
                                                     kMaxPartMetadataBytes, " bytes of entries"));
  }
  RETURN_IF_ERROR(Charge(metadata));
  metadata_ += metadata;
  const std::optional<uint64_t> elements = Elements(shape);
  if (!elements.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry '", name, "' has an invalid shape ", ShapeString(shape)));
  }
  if (offset > *elements || count > *elements - offset) {
    return absl::InvalidArgumentError(absl::StrCat("entry '", name, "': slice [", offset, ", +",
                                                   count, ") runs past its ", *elements,
                                                   " elements"));
  }
  slices_.push_back({std::string(name), kind, dtype, std::move(shape), offset, count, written_});
  slice_left_ = count * DTypeSize(dtype);
  return absl::OkStatus();
}

absl::Status SpooledPart::Append(const void* data, size_t size_bytes) {
  if (slices_.empty() || size_bytes > slice_left_) {
    return absl::InvalidArgumentError(
        absl::StrCat(size_bytes, " bytes past the end of ",
                     slices_.empty() ? std::string("no entry")
                                     : absl::StrCat("entry '", slices_.back().name, "'s slice")));
  }
  RETURN_IF_ERROR(Charge(size_bytes));
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(size_bytes));
  if (!out_) return ErrnoStatus(errno, absl::StrCat("writing ", path_));
  written_ += size_bytes;
  slice_left_ -= size_bytes;
  return absl::OkStatus();
}

absl::Status SpooledPart::Close() {
  RETURN_IF_ERROR(CheckSliceComplete());
  out_.flush();
  if (!out_) return ErrnoStatus(errno, absl::StrCat("writing ", path_));
  out_.close();
  return absl::OkStatus();
}

absl::StatusOr<Layout> LayoutOfParts(absl::Span<const SpooledPart* const> parts) {
  Layout layout;
  // Per entry, the first slice seen and the parts that sliced it.
  std::map<std::string, std::pair<const SpooledSlice*, std::set<size_t>>> seen;
  for (size_t p = 0; p < parts.size(); ++p) {
    for (const SpooledSlice& slice : parts[p]->slices()) {
      if (slice.kind == EntryKind::kBlob && p != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "entry '", slice.name, "': part ", p, " sends a blob; blobs come from part 0 alone"));
      }
      auto [it, first] = seen.try_emplace(slice.name, &slice, std::set<size_t>{});
      if (first) {
        layout.push_back({slice.name, slice.kind, slice.dtype, slice.shape});
      } else {
        const SpooledSlice& other = *it->second.first;
        if (other.kind != slice.kind || other.dtype != slice.dtype || other.shape != slice.shape) {
          return absl::InvalidArgumentError(
              absl::StrCat("entry '", slice.name, "': part ", *it->second.second.begin(), " sends ",
                           DTypeName(other.dtype), ShapeString(other.shape), ", part ", p, " ",
                           DTypeName(slice.dtype), ShapeString(slice.shape)));
        }
      }
      it->second.second.insert(p);
    }
  }
  for (const auto& [name, entry] : seen) {
    if (entry.first->kind != EntryKind::kTensor || entry.second.size() == parts.size()) continue;
    for (size_t p = 0; p < parts.size(); ++p) {
      if (entry.second.count(p) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry '", name, "': part ", p,
                         " sends no slice of it; every member slices every tensor"));
      }
    }
  }
  return layout;
}

absl::Status JoinParts(absl::Span<const SpooledPart* const> parts, CheckpointWriter* out) {
  RETURN_IF_ERROR(LayoutOfParts(parts).status());
  struct Piece {
    size_t part;
    const SpooledSlice* slice;
  };
  std::vector<std::string> order;
  std::map<std::string, std::vector<Piece>> entries;
  for (size_t p = 0; p < parts.size(); ++p) {
    for (const SpooledSlice& slice : parts[p]->slices()) {
      std::vector<Piece>& pieces = entries[slice.name];
      if (pieces.empty()) order.push_back(slice.name);
      pieces.push_back({p, &slice});
    }
  }
  for (auto& [name, pieces] : entries) {
    std::sort(pieces.begin(), pieces.end(),
              [](const Piece& a, const Piece& b) { return a.slice->offset < b.slice->offset; });
    uint64_t at = 0;
    for (const Piece& piece : pieces) {
      if (piece.slice->offset != at) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry '", name, "': part ", piece.part, "'s slice starts at element ",
                         piece.slice->offset, ", expected ", at,
                         piece.slice->offset < at ? " (overlap)" : " (gap)"));
      }
      at += piece.slice->count;
    }
    const uint64_t elements = *Elements(pieces.front().slice->shape);
    if (at != elements) {
      return absl::InvalidArgumentError(absl::StrCat("entry '", name, "': the parts hold ", at,
                                                     " of its ", elements, " elements"));
    }
  }

  std::vector<std::ifstream> files(parts.size());
  for (size_t p = 0; p < parts.size(); ++p) {
    files[p].open(parts[p]->path(), std::ios::binary);
    if (!files[p]) return ErrnoStatus(errno, absl::StrCat("opening ", parts[p]->path()));
  }
  std::string buffer;
  for (const std::string& name : order) {
    const std::vector<Piece>& pieces = entries.at(name);
    const SpooledSlice& first = *pieces.front().slice;
    RETURN_IF_ERROR(out->BeginEntry(name, first.kind, first.dtype, first.shape));
    for (const Piece& piece : pieces) {
      std::ifstream& in = files[piece.part];
      in.seekg(static_cast<std::streamoff>(piece.slice->file_offset));
      uint64_t left = piece.slice->count * DTypeSize(piece.slice->dtype);
      while (left > 0) {
        buffer.resize(std::min<uint64_t>(left, kCopyBytes));
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        if (!in) {
          return absl::DataLossError(
              absl::StrCat("reading ", parts[piece.part]->path(), ": the spooled part is short"));
        }
        RETURN_IF_ERROR(out->Append(buffer.data(), buffer.size()));
        left -= buffer.size();
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace potluck::coordinator_internal
