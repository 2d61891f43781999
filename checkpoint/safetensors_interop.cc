#include "checkpoint/safetensors_interop.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"

#include "checkpoint/safetensors.h"
#include "common/status.h"

namespace potluck {

namespace {
constexpr uint64_t kCopyBytes = 4 << 20;
}  // namespace

absl::Status ExportSafetensors(CheckpointReader& reader, const std::string& path) {
  const CheckpointInfo& info = reader.info();
  std::vector<SafetensorsEntry> entries;
  std::vector<const EntryInfo*> sources;
  for (const EntryInfo& entry : info.entries) {
    if (entry.kind != EntryKind::kTensor) continue;
    SafetensorsEntry out;
    out.name = entry.name;
    out.dtype = entry.dtype;
    out.shape = entry.shape;
    entries.push_back(std::move(out));
    sources.push_back(&entry);
  }
  const std::map<std::string, std::string> metadata = {{"potluck.job", info.job_id},
                                                       {"potluck.step", absl::StrCat(info.step)}};
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                   SafetensorsWriter::Create(path, std::move(entries), metadata));
  for (const EntryInfo* entry : sources) {
    for (uint32_t chunk = 0; chunk < entry->num_chunks; ++chunk) {
      ASSIGN_OR_RETURN(const std::string bytes, reader.ReadChunk(entry->name, chunk));
      RETURN_IF_ERROR(writer->Append(bytes.data(), bytes.size()));
    }
  }
  return writer->Finish();
}

absl::Status ImportSafetensors(const std::string& path, CheckpointStore& store,
                               absl::string_view job_id, uint64_t step) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> file, SafetensorsReader::Open(path));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> writer, store.BeginSave(job_id, step));
  std::vector<char> buffer;
  for (const SafetensorsEntry& entry : file->entries()) {
    RETURN_IF_ERROR(writer->BeginEntry(entry.name, EntryKind::kTensor, entry.dtype, entry.shape));
    for (uint64_t offset = 0; offset < entry.size_bytes(); offset += kCopyBytes) {
      const size_t size = static_cast<size_t>(std::min(kCopyBytes, entry.size_bytes() - offset));
      buffer.resize(size);
      RETURN_IF_ERROR(file->Read(entry, offset, buffer.data(), size));
      RETURN_IF_ERROR(writer->Append(buffer.data(), size));
    }
  }
  return writer->Commit();
}

}  // namespace potluck
