#include "checkpoint/internal/format.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "common/checksum.h"
#include "common/little_endian.h"

namespace potluck::checkpoint_internal {

namespace {

std::string StepText(uint64_t step) { return absl::StrFormat("%020u", step); }

// SimpleAtoi also takes a sign and surrounding spaces; a step is written as
// StepText writes it, so every name has one spelling (found by
// fuzz/checkpoint_manifest_fuzzer.cc).
bool AllDigits(absl::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isdigit(c); });
}

}  // namespace

std::string ManifestKey(absl::string_view job_id, uint64_t step) {
  return absl::StrCat(kManifestRoot, job_id, "/", StepText(step));
}

std::string ManifestPrefix(absl::string_view job_id) {
  return absl::StrCat(kManifestRoot, job_id, "/");
}

std::string RecordKey(absl::string_view key) { return absl::StrCat("r/", key); }

std::string DataFileName(uint64_t step) { return absl::StrCat(StepText(step), kDataSuffix); }

std::string DataFileHeader(uint64_t step) {
  std::string header(kDataMagic, 8);
  AppendLittleEndian(&header, kFormatVersion, 4);
  AppendLittleEndian(&header, 0, 4);
  AppendLittleEndian(&header, step, 8);
  return header;
}

bool ParseDataFileName(absl::string_view name, uint64_t* step) {
  constexpr size_t kSuffixBytes = sizeof(kDataSuffix) - 1;
  if (name.size() != 20 + kSuffixBytes || name.substr(20) != kDataSuffix) return false;
  return AllDigits(name.substr(0, 20)) && absl::SimpleAtoi(name.substr(0, 20), step);
}

bool ParseJobStepKey(absl::string_view key, absl::string_view root, std::string* job_id,
                     uint64_t* step) {
  if (key.substr(0, root.size()) != root) return false;
  key.remove_prefix(root.size());
  const size_t slash = key.rfind('/');
  if (slash == absl::string_view::npos || slash == 0 || key.size() - slash - 1 != 20) return false;
  if (!AllDigits(key.substr(slash + 1)) || !absl::SimpleAtoi(key.substr(slash + 1), step)) {
    return false;
  }
  *job_id = std::string(key.substr(0, slash));
  return true;
}

std::string EncodeManifest(const v1::CheckpointManifest& manifest) {
  const std::string payload = manifest.SerializeAsString();
  std::string frame;
  frame.reserve(kManifestHeaderBytes + payload.size());
  frame.append(kManifestMagic, 4);
  AppendLittleEndian(&frame, kFormatVersion, 4);
  AppendLittleEndian(&frame, payload.size(), 8);
  AppendLittleEndian(&frame, Checksum64(payload), 8);
  frame.append(payload);
  return frame;
}

absl::StatusOr<v1::CheckpointManifest> DecodeManifest(absl::string_view bytes,
                                                      absl::string_view context) {
  if (bytes.size() < kManifestHeaderBytes || bytes.substr(0, 4) != kManifestMagic) {
    return absl::DataLossError(absl::StrCat(context, ": manifest frame is short or has no magic"));
  }
  const uint32_t version = static_cast<uint32_t>(ReadLittleEndian(bytes.data() + 4, 4));
  if (version > kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(context, ": manifest format version ",
                                                      version, " is newer than this build (",
                                                      kFormatVersion, ")"));
  }
  const uint64_t length = ReadLittleEndian(bytes.data() + 8, 8);
  const uint64_t checksum = ReadLittleEndian(bytes.data() + 16, 8);
  if (length > kMaxManifestBytes || length != bytes.size() - kManifestHeaderBytes) {
    return absl::DataLossError(absl::StrCat(context, ": manifest length ", length,
                                            " does not match its frame of ", bytes.size(),
                                            " bytes"));
  }
  const absl::string_view payload = bytes.substr(kManifestHeaderBytes);
  if (Checksum64(payload) != checksum) {
    return absl::DataLossError(absl::StrCat(context, ": manifest checksum mismatch"));
  }
  v1::CheckpointManifest manifest;
  if (!manifest.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::DataLossError(absl::StrCat(context, ": manifest does not parse"));
  }
  return manifest;
}

}  // namespace potluck::checkpoint_internal
