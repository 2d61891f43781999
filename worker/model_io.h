// Getting models and training state in and out: a job's model with its
// `init_from` weights, training checkpoints (trainer state + the job spec),
// and safetensors exports with LoRA adapters merged.
//
// A training checkpoint holds the trainer's entries (trainer.h) and two blobs:
// "job" (the JobSpec as JSON, so the checkpoint alone rebuilds its model) and
// whatever the caller adds (e.g. "data/cursor"). Under LoRA only the adapters
// are saved; the frozen base is rebuilt from the job's seed or `init_from`.
//
// Thread-safety: free functions; the objects passed in are used by one thread.
#ifndef POTLUCK_WORKER_MODEL_IO_H_
#define POTLUCK_WORKER_MODEL_IO_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"
#include "potluck/v1/job.pb.h"
#include "worker/model.h"
#include "worker/trainer.h"

namespace potluck {

inline constexpr char kJobBlob[] = "job";

// The job's model, initialised from its seed, then from `model.init_from`
// when set: a .safetensors file, or a checkpoint store directory (its newest
// checkpoint's "param/" tensors). Tensors the model lacks are kInvalidArgument.
absl::StatusOr<std::unique_ptr<Model>> CreateJobModel(const potluck::v1::JobSpec& job,
                                                      const ModelOptions& options = {});

// Every tensor of a .safetensors file, as float32/float64 torch tensors.
absl::StatusOr<std::vector<std::pair<std::string, torch::Tensor>>> ReadSafetensorsTensors(
    const std::string& path);

// Writes the model's merged weights (LoRA folded into the base) to `path`.
absl::Status ExportModel(const Model& model, const std::string& path);

// Commits the trainer's state at `step` with the job spec and `extra_blobs`,
// atomically with `records`.
absl::Status SaveTrainingCheckpoint(CheckpointStore* store, const potluck::v1::JobSpec& job,
                                    uint64_t step, const Trainer& trainer,
                                    absl::Span<const BlobToSave> extra_blobs = {},
                                    absl::Span<const Record> records = {});

// The same entries through a streaming writer (e.g. an upload to the
// coordinator); the caller commits.
absl::Status WriteTrainingCheckpoint(CheckpointWriter* writer, const potluck::v1::JobSpec& job,
                                     const Trainer& trainer,
                                     absl::Span<const BlobToSave> extra_blobs = {});

// Part `part` of `parts` of the same checkpoint, for an upload split across
// a group (CheckpointPartWriter): elements [n * part / parts, n * (part + 1)
// / parts) of every tensor, and the blobs whole in part 0. Every member's
// trainer must hold the same state.
absl::Status WriteTrainingCheckpointPart(CheckpointPartWriter* writer,
                                         const potluck::v1::JobSpec& job, const Trainer& trainer,
                                         uint32_t part, uint32_t parts);

// The JobSpec a training checkpoint was saved with; kDataLoss if unreadable.
absl::StatusOr<potluck::v1::JobSpec> ReadJobSpec(CheckpointReader* reader);

// The checkpoint's job model with its trained parameters (e.g. to sample).
absl::StatusOr<std::unique_ptr<Model>> LoadTrainedModel(CheckpointReader* reader);

}  // namespace potluck

#endif  // POTLUCK_WORKER_MODEL_IO_H_
