// Moving tensors between potluck checkpoints and .safetensors files, so that
// models trained here can be used elsewhere and pretrained weights can seed a
// job. Both directions stream chunk-sized pieces: a many-GiB model is never
// held in memory at once.
//
// Thread-safety: as for the reader/store passed in.
#ifndef POTLUCK_CHECKPOINT_SAFETENSORS_INTEROP_H_
#define POTLUCK_CHECKPOINT_SAFETENSORS_INTEROP_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

#include "checkpoint/checkpoint_store.h"

namespace potluck {

// Writes every tensor entry of the checkpoint to `path` (blobs such as the
// ledger or RNG state are not model weights and are left out). The file's
// metadata names the job and step ("potluck.job", "potluck.step").
absl::Status ExportSafetensors(CheckpointReader& reader, const std::string& path);

// Saves every tensor of the .safetensors file at `path` as checkpoint
// (job_id, step). Malformed files are kInvalidArgument with the reason.
absl::Status ImportSafetensors(const std::string& path, CheckpointStore& store,
                               absl::string_view job_id, uint64_t step);

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_SAFETENSORS_INTEROP_H_
