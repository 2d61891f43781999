// The checkpoint store's on-disk layout: RocksDB keys and the manifest frame.
// docs/checkpoint-format.md describes the same thing for people; a change here
// is a format change and needs a new version there.
#ifndef POTLUCK_CHECKPOINT_INTERNAL_FORMAT_H_
#define POTLUCK_CHECKPOINT_INTERNAL_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "potluck/v1/checkpoint.pb.h"

namespace potluck::checkpoint_internal {

inline constexpr uint32_t kFormatVersion = 1;
// The value of kFormatKey in every store of this version.
inline constexpr char kFormatKey[] = "format";
inline constexpr char kFormatValue[] = "potluck-checkpoint 1";
// Manifest frame: "PLCK", u32 version, u64 payload length, u64 XXH3-64 of
// the payload (all little-endian), then the CheckpointManifest proto.
inline constexpr char kManifestMagic[] = "PLCK";
inline constexpr size_t kManifestHeaderBytes = 24;
inline constexpr uint64_t kMaxManifestBytes = 64 << 20;

// m/<job>/<step, 20 digits>                       the manifest (commit point)
std::string ManifestKey(absl::string_view job_id, uint64_t step);
std::string ManifestPrefix(absl::string_view job_id);  // "m/<job>/"
inline constexpr char kManifestRoot[] = "m/";
// r/<caller key>   records committed with a checkpoint
std::string RecordKey(absl::string_view key);

// Chunk data lives in one file per checkpoint, <store>/data/<job>/<step>.chunks:
// a header (magic "PLCKDATA", u32 version, u32 zero, u64 step; little-endian),
// then every entry's bytes, back to back, in manifest order.
inline constexpr char kDataDir[] = "data";
inline constexpr char kDataMagic[] = "PLCKDATA";
inline constexpr uint64_t kDataHeaderBytes = 24;
inline constexpr char kDataSuffix[] = ".chunks";
std::string DataFileName(uint64_t step);  // "<step, 20 digits>.chunks"
std::string DataFileHeader(uint64_t step);
// The step a data file's name encodes; false for any other name.
bool ParseDataFileName(absl::string_view name, uint64_t* step);

// Splits "m/<job>/<step>" (after the root) into its parts.
bool ParseJobStepKey(absl::string_view key, absl::string_view root, std::string* job_id,
                     uint64_t* step);

std::string EncodeManifest(const v1::CheckpointManifest& manifest);
// kDataLoss for a frame that is short, has the wrong magic or checksum, or
// does not parse; kFailedPrecondition for a newer format version.
absl::StatusOr<v1::CheckpointManifest> DecodeManifest(absl::string_view bytes,
                                                      absl::string_view context);

}  // namespace potluck::checkpoint_internal

#endif  // POTLUCK_CHECKPOINT_INTERNAL_FORMAT_H_
