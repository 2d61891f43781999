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
#include "rocksdb/status.h"

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
// c/<job>/<step>/<entry, 6 digits>/<chunk, 10 digits>   chunk bytes
std::string ChunkKey(absl::string_view job_id, uint64_t step, uint32_t entry, uint32_t chunk);
// The key range holding every chunk of one step: [begin, end).
std::string ChunkRangeBegin(absl::string_view job_id, uint64_t step);
std::string ChunkRangeEnd(absl::string_view job_id, uint64_t step);
// p/<job>/<step>   a save in progress (deleted by the commit batch)
std::string PendingKey(absl::string_view job_id, uint64_t step);
inline constexpr char kPendingRoot[] = "p/";
// r/<caller key>   records committed with a checkpoint
std::string RecordKey(absl::string_view key);

// Splits "m/<job>/<step>" or "p/<job>/<step>" (after the root) into its parts.
bool ParseJobStepKey(absl::string_view key, absl::string_view root, std::string* job_id,
                     uint64_t* step);

std::string EncodeManifest(const v1::CheckpointManifest& manifest);
// kDataLoss for a frame that is short, has the wrong magic or checksum, or
// does not parse; kFailedPrecondition for a newer format version.
absl::StatusOr<v1::CheckpointManifest> DecodeManifest(absl::string_view bytes,
                                                      absl::string_view context);

// Converts a RocksDB status at the lowest layer: Corruption is kDataLoss,
// NoSpace kResourceExhausted, other I/O errors kUnavailable.
absl::Status FromRocksDb(const rocksdb::Status& status, absl::string_view context);

}  // namespace potluck::checkpoint_internal

#endif  // POTLUCK_CHECKPOINT_INTERNAL_FORMAT_H_
